"""`manage.py healthcheck web|worker|beat`: the compose services' health checks (exit 0 healthy, 1 not)."""

import socket
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from celery.utils.nodenames import default_nodename
from django.core.management import CommandError, call_command
from django.utils import timezone

from integrations.heartbeats import BEAT_STALE_SECONDS, WORKER_STALE_SECONDS
from integrations.models import Heartbeat

THIS_WORKER = default_nodename(None)  # what `celery worker` without -n calls itself in this container


def healthcheck(*args, **options) -> str:
    from io import StringIO

    out = StringIO()
    call_command("healthcheck", *args, stdout=out, **options)
    return out.getvalue()


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


@pytest.mark.django_db
def test_worker_is_healthy_only_with_its_own_fresh_running_heartbeat():
    with pytest.raises(CommandError, match="no heartbeat yet"):
        healthcheck("worker")
    Heartbeat.objects.create(name="celery@another-container", kind="worker", seen_at=ago(1), info={})
    with pytest.raises(CommandError, match="no heartbeat yet"):
        healthcheck("worker")

    mine = Heartbeat.objects.create(name=THIS_WORKER, kind="worker", seen_at=ago(5), info={"state": "running"})
    assert healthcheck("worker").startswith(f"healthy: {THIS_WORKER}: running")

    Heartbeat.objects.filter(pk=mine.pk).update(seen_at=ago(WORKER_STALE_SECONDS + 5))
    with pytest.raises(CommandError, match="unhealthy"):
        healthcheck("worker")
    Heartbeat.objects.filter(pk=mine.pk).update(seen_at=ago(1), info={"state": "stopped"})
    with pytest.raises(CommandError, match="stopped"):
        healthcheck("worker")
    assert "healthy" in healthcheck("worker", name="celery@another-container")


@pytest.mark.django_db
def test_beat_is_healthy_while_its_heartbeat_task_runs():
    with pytest.raises(CommandError, match="beat: no heartbeat yet"):
        healthcheck("beat")
    beat = Heartbeat.objects.create(name="beat", kind="beat", seen_at=ago(10))
    assert healthcheck("beat").startswith("healthy: beat")
    Heartbeat.objects.filter(pk=beat.pk).update(seen_at=ago(BEAT_STALE_SECONDS + 5))
    with pytest.raises(CommandError, match="unhealthy"):
        healthcheck("beat")


def test_web_is_healthy_when_liveness_answers_whatever_allowed_hosts_says(live_server, settings):
    settings.ALLOWED_HOSTS = ["shop.example.com"]  # the check sends Host: 127.0.0.1:<port>
    port = urlsplit(live_server.url).port
    assert healthcheck("web", port=port).startswith(f"healthy: http://127.0.0.1:{port}/health/live/: 200")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(CommandError, match="ConnectionError"):
        healthcheck("web", port=closed)
