"""The dashboard's status block: workers, beat, broker (bounded in time) and the oldest pending row."""

import socket
import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from integrations import dashboard_status, selectors
from integrations.models import Heartbeat, IntegrationSync
from integrations.tests.factories import IntegrationFactory
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db
DASHBOARD = "/admin/integrations/dashboard/"


@pytest.fixture
def staff() -> Client:
    user = UserFactory(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_integrationsync"))
    client = Client()
    client.force_login(user)
    return client


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def row_text(html: str, row_id: str) -> str:
    return html.split(f'id="{row_id}"')[1].split("</tr>")[0]


def test_status_block_shows_live_and_dead_workers_beat_broker_queue_and_oldest_pending(staff, redis_client):
    Heartbeat.objects.create(name="celery@up", kind="worker", seen_at=ago(5), info={"concurrency": 4})
    Heartbeat.objects.create(name="celery@gone", kind="worker", seen_at=ago(600))
    Heartbeat.objects.create(name="celery@bye", kind="worker", seen_at=ago(30), info={"state": "stopped"})
    Heartbeat.objects.create(name="beat", kind="beat", seen_at=ago(10))
    Heartbeat.objects.create(name="sweep_due_syncs", kind="beat", seen_at=ago(3600))
    redis_client.rpush("celery", "m1", "m2", "m3")
    n8n = IntegrationFactory(name="n8n-main")
    OrderFactory()
    IntegrationSync.objects.filter(integration=n8n, content_type__model="user").update(created_at=ago(7260))

    response = staff.get(DASHBOARD)

    assert response.status_code == 200
    status = response.context["status"]
    assert status["workers"]["ok"] and status["workers"]["summary"] == "1 alive, 2 not"
    assert [(w["name"], w["verdict"]) for w in status["workers"]["workers"]] == [
        ("celery@up", "alive"),
        ("celery@bye", "stopped"),
        ("celery@gone", "silent"),
    ]
    assert status["beat"]["summary"].startswith("ticking") and status["beat"]["overdue"] == ["sweep_due_syncs"]
    assert status["broker"] == {"ok": True, "summary": "reachable, 3 messages queued"}
    assert status["oldest_pending"]["summary"] == "2h 1m (n8n-main)"
    html = response.content.decode()
    assert "celery@up: alive, last seen 5s ago · concurrency 4" in row_text(html, "status-workers")
    assert "overdue: sweep_due_syncs" in row_text(html, "status-beat")
    assert "reachable, 3 messages queued" in row_text(html, "status-broker")
    assert "2h 1m (n8n-main)" in row_text(html, "status-oldest-pending")


def test_status_block_says_when_nothing_runs(staff, redis_client):
    html = staff.get(DASHBOARD).content.decode()

    assert "no worker has ever reported" in row_text(html, "status-workers")
    assert "never seen" in row_text(html, "status-beat") and "no worker, no beat" in row_text(html, "status-beat")
    assert "nothing pending" in row_text(html, "status-oldest-pending")

    Heartbeat.objects.create(name="celery@gone", kind="worker", seen_at=ago(600))
    Heartbeat.objects.create(name="beat", kind="beat", seen_at=ago(900))
    html = staff.get(DASHBOARD).content.decode()
    assert "no live worker" in row_text(html, "status-workers") and 'class="state-off"' in row_text(
        html, "status-workers"
    )
    assert "no heartbeat for 15m" in row_text(html, "status-beat")


def test_broker_refusing_connections_is_shown_unreachable(staff, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    response = staff.get(DASHBOARD)

    assert response.status_code == 200
    assert "unreachable (connection failed)" in row_text(response.content.decode(), "status-broker")


@pytest.fixture
def silent_broker():
    """A TCP port on 127.0.0.1 that completes connections (the kernel's backlog) and never answers a byte."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()


def test_a_broker_that_never_answers_does_not_hold_the_page(staff, settings, silent_broker):
    settings.REDIS_URL = silent_broker

    started = time.monotonic()
    response = staff.get(DASHBOARD)
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert "unreachable" in row_text(response.content.decode(), "status-broker")
    assert elapsed < dashboard_status.BROKER_DEADLINE_SECONDS + 5  # a hang would be the redis client's own timeout


def test_a_broker_check_stuck_past_its_socket_timeouts_is_cut_off_at_the_deadline(staff, monkeypatch):
    """E.g. a host name whose DNS lookup never returns: no socket timeout covers it, the page's deadline does."""
    release = threading.Event()

    def stuck(timeout: float) -> dict:
        release.wait(60)
        return {"reachable": True, "queue_length": 0}

    monkeypatch.setattr(selectors, "broker_status", stuck)
    try:
        started = time.monotonic()
        response = staff.get(DASHBOARD)
        elapsed = time.monotonic() - started
    finally:
        release.set()

    assert response.status_code == 200
    expected = f"unreachable (no answer within {dashboard_status.BROKER_DEADLINE_SECONDS:g} s)"
    assert expected in row_text(response.content.decode(), "status-broker")
    assert dashboard_status.BROKER_DEADLINE_SECONDS <= elapsed < dashboard_status.BROKER_DEADLINE_SECONDS + 5


def test_inbound_calls_table_says_why_a_call_was_ignored(staff):
    from integrations.models import InboundStatus, InboundWebhook

    InboundWebhook.objects.create(
        method="POST",
        path="/bitrix/webhook",
        event="ONCRMDEALUPDATE",
        remote_object="DEAL_9",
        status=InboundStatus.IGNORED,
        result={"reason": "stage is the one we last wrote", "echo": True},
    )

    html = staff.get(DASHBOARD).content.decode()

    assert '<td class="error-text inbound-reason">stage is the one we last wrote</td>' in html
