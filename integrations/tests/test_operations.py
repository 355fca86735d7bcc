"""Operations API (status, syncs, inbound, retry), worker heartbeats and the stored beat schedule."""

import importlib
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.conf import settings as django_settings
from django.urls import include, path
from django.utils import timezone
from rest_framework.test import APIClient

from integrations import dispatcher, heartbeats
from integrations.models import (
    Heartbeat,
    InboundStatus,
    InboundWebhook,
    IntegrationKind,
    IntegrationSync,
    SyncStatus,
)
from integrations.policy import Verdict
from integrations.tests.factories import IntegrationFactory
from integrations.tests.support import answer, child_database_env
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

# The API under the path app/urls.py gives it, independent of whether the project urlconf includes it yet.
urlpatterns = [path("api/integrations/", include("integrations.api_urls"))]
pytestmark = pytest.mark.urls(__name__)

BITRIX_CODE = "s3cr3tc0de9x7q2w"
BITRIX_URL = f"https://portal.example.com/rest/1/{BITRIX_CODE}/"
ENDPOINTS = ["/api/integrations/status/", "/api/integrations/syncs/", "/api/integrations/inbound/"]


def api(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user=user)
    return client


@pytest.fixture
def staff(db):
    return UserFactory(is_staff=True)


@pytest.fixture
def operator(db):
    """Staff who may retry: the change permission on integration syncs."""
    from django.contrib.auth.models import Permission

    user = UserFactory(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_integrationsync"))
    return user


def age(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


# Permissions


@pytest.mark.django_db
@pytest.mark.parametrize("url", ENDPOINTS)
def test_read_endpoints_are_staff_only(url, staff):
    assert api().get(url).status_code == 401
    assert api(UserFactory()).get(url).status_code == 403
    assert api(staff).get(url).status_code == 200


@pytest.mark.django_db
def test_retry_needs_staff_with_the_change_permission(recording_target, staff, operator):
    IntegrationFactory()
    OrderFactory()
    row = IntegrationSync.objects.filter(content_type__model="order").get()
    url = f"/api/integrations/syncs/{row.pk}/retry/"
    assert api().post(url).status_code == 401
    assert api(UserFactory()).post(url).status_code == 403
    view_only = api(staff).post(url)
    assert view_only.status_code == 403
    assert "integrations.change_integrationsync" in view_only.json()["detail"]
    assert api(operator).post("/api/integrations/syncs/999999/retry/").status_code == 404


# Status


@pytest.mark.django_db
def test_status_reports_counts_oldest_pending_masked_endpoint_and_bucket(staff, redis_client):
    bitrix = IntegrationFactory(kind=IntegrationKind.BITRIX24, name="bitrix", endpoint=BITRIX_URL)
    IntegrationFactory(name="n8n", enabled=False, disabled_reason="410 Gone from receiver")
    OrderFactory()  # user + order rows for both integrations (n8n disabled: skipped)
    IntegrationSync.objects.filter(integration=bitrix, content_type__model="order").update(
        status=SyncStatus.DEAD, created_at=age(600)
    )
    IntegrationSync.objects.filter(integration=bitrix, content_type__model="user").update(created_at=age(120))

    response = api(staff).get("/api/integrations/status/")

    assert response.status_code == 200
    assert BITRIX_CODE not in response.content.decode()
    body = response.json()
    by_name = {i["name"]: i for i in body["integrations"]}
    b, n = by_name["bitrix"], by_name["n8n"]
    assert b["endpoint"] == "https://portal.example.com/***"
    assert (b["counts"]["pending"], b["counts"]["dead"], b["dead"], b["open"]) == (1, 1, 1, 1)
    assert 119 <= b["oldest_pending_age_seconds"] < 200  # the dead row is not "pending"
    assert b["rate_limit"]["burst"] == 50 and b["rate_limit"]["tokens"] == 50
    assert (n["enabled"], n["disabled_reason"], n["rate_limit"]) == (False, "410 Gone from receiver", None)
    assert n["counts"]["skipped"] == 2 and n["oldest_pending_age_seconds"] is None
    assert {"last_success_at", "last_failure_at", "kind", "id"} <= set(b)
    assert body["settings"] == {"bitrix_enabled": True, "n8n_enabled": False}  # the Integration rows, not the env
    assert body["broker"] == {"reachable": True, "queue_length": 0}


@pytest.mark.django_db
def test_status_shows_a_stopped_worker_as_not_alive(staff):
    Heartbeat.objects.create(name="celery@up", kind="worker", seen_at=age(5), info={"pid": 11, "concurrency": 2})
    Heartbeat.objects.create(name="celery@gone", kind="worker", seen_at=age(600), info={"pid": 12})
    Heartbeat.objects.create(name="celery@bye", kind="worker", seen_at=age(5), info={"state": "stopped"})

    workers = {w["name"]: w for w in api(staff).get("/api/integrations/status/").json()["workers"]}

    assert workers["celery@up"]["alive"] is True and workers["celery@up"]["concurrency"] == 2
    assert workers["celery@gone"]["alive"] is False and workers["celery@gone"]["last_seen_age_seconds"] >= 600
    assert workers["celery@bye"]["alive"] is False and workers["celery@bye"]["state"] == "stopped"


@pytest.mark.django_db
def test_status_shows_beat_liveness_and_overdue_tasks(staff):
    Heartbeat.objects.create(name="celery@up", kind="worker", seen_at=age(1))
    Heartbeat.objects.create(name="beat", kind="beat", seen_at=age(10))
    Heartbeat.objects.create(name="sweep_due_syncs", kind="beat", seen_at=age(3600))

    beat = api(staff).get("/api/integrations/status/").json()["beat"]

    tasks = {t["name"]: t for t in beat["tasks"]}
    assert beat["alive"] is True and "note" not in beat
    assert tasks["sweep_due_syncs"]["overdue"] is True and tasks["sweep_due_syncs"]["every_seconds"] == 5
    assert tasks["heartbeat_beat"]["overdue"] is False
    assert tasks["cleanup_sync_history"]["overdue"] is None and tasks["cleanup_sync_history"]["last_run_at"] is None


@pytest.mark.django_db
def test_status_beat_is_down_when_its_heartbeat_is_stale_and_says_why_without_workers(staff):
    Heartbeat.objects.create(name="beat", kind="beat", seen_at=age(900))

    beat = api(staff).get("/api/integrations/status/").json()["beat"]

    assert beat["alive"] is False and "no live worker" in beat["note"]


@pytest.mark.django_db
def test_status_reports_broker_outage_and_queue_length(staff, settings, redis_client):
    redis_client.rpush("celery", "m1", "m2")
    assert api(staff).get("/api/integrations/status/").json()["broker"] == {"reachable": True, "queue_length": 2}

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    response = api(staff).get("/api/integrations/status/")

    assert response.status_code == 200
    assert response.json()["broker"] == {"reachable": False, "queue_length": None}


# Sync history


@pytest.mark.django_db
def test_syncs_of_one_object_come_with_their_attempts(recording_target, staff):
    integration = IntegrationFactory(name="n8n")
    recording_target.script = [lambda item: None, answer(Verdict.RETRYABLE, 503)]  # user row ok, order row 503
    order, other = OrderFactory(), OrderFactory()
    dispatcher.drain()
    IntegrationSync.objects.update(next_attempt_at=timezone.now())
    dispatcher.drain()

    response = api(staff).get("/api/integrations/syncs/", {"object": f"order:{order.pk}"})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1 and {"next", "previous", "results"} <= set(body)
    row = body["results"][0]
    assert (row["integration"], row["integration_name"], row["object_type"]) == (integration.pk, "n8n", "order")
    assert (row["object_id"], row["event_name"], row["status"]) == (str(order.pk), "order.created", "synced")
    assert row["payload"]["title"] == order.title and row["event_id"]
    assert [(a["number"], a["outcome"], a["http_status"]) for a in row["attempt_rows"]] == [
        (1, "retryable", 503),
        (2, "ok", 200),
    ]
    assert str(other.pk) not in {r["object_id"] for r in response.json()["results"]}


@pytest.mark.django_db
def test_syncs_filter_by_integration_status_event_and_since(staff):
    a, b = IntegrationFactory(name="a"), IntegrationFactory(name="b")
    order = OrderFactory()
    order.title = "changed"
    order.save()
    IntegrationSync.objects.filter(integration=a, event_type="updated").update(status=SyncStatus.DEAD)
    IntegrationSync.objects.filter(content_type__model="user").update(created_at=age(86400 * 3))

    def ids(**params):
        response = api(staff).get("/api/integrations/syncs/", params)
        assert response.status_code == 200, response.content
        return sorted((r["integration_name"], r["event_name"]) for r in response.json()["results"])

    assert ids(integration=b.pk, event="order.updated") == [("b", "order.updated")]
    assert ids(status="dead") == [("a", "order.updated")]
    assert ids(event="created", integration=a.pk) == [("a", "order.created"), ("a", "user.created")]
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert ("a", "user.created") not in ids(since=since) and len(ids(since=since)) == 4


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params, field",
    [
        ({"object": "order"}, "object"),
        ({"object": "invoice:4"}, "object"),
        ({"object": "order:abc"}, "object"),
        ({"object": "order:0"}, "object"),
        ({"status": "lost"}, "status"),
        ({"event": "order.exploded"}, "event"),
        ({"since": "yesterday"}, "since"),
        ({"integration": "bitrix"}, "integration"),
    ],
)
def test_syncs_bad_filter_values_are_400_with_a_message(params, field, staff):
    response = api(staff).get("/api/integrations/syncs/", params)
    assert response.status_code == 400
    assert response.json()[field][0]


# Inbound


@pytest.mark.django_db
def test_inbound_lists_rows_with_filters(staff):
    def inbound(**fields):
        return InboundWebhook.objects.create(method="POST", path="/bitrix/webhook", **fields)

    old = inbound(event="ONCRMDEALUPDATE", remote_object="DEAL_1", status=InboundStatus.PROCESSED)
    InboundWebhook.objects.filter(pk=old.pk).update(received_at=age(86400 * 2))
    inbound(event="ONCRMDEALUPDATE", remote_object="DEAL_2", status=InboundStatus.FAILED, error="boom")
    inbound(event="ROBOT", remote_object="DEAL_2", status=InboundStatus.REJECTED, query={"token": "***"})

    def objects(**params):
        response = api(staff).get("/api/integrations/inbound/", params)
        assert response.status_code == 200, response.content
        return [(r["event"], r["remote_object"], r["status"]) for r in response.json()["results"]]

    assert len(objects()) == 3
    assert objects(status="failed") == [("ONCRMDEALUPDATE", "DEAL_2", "failed")]
    assert objects(event="robot") == [("ROBOT", "DEAL_2", "rejected")]
    assert ("ONCRMDEALUPDATE", "DEAL_1", "processed") not in objects(since=age(3600).isoformat())
    assert api(staff).get("/api/integrations/inbound/", {"status": "weird"}).status_code == 400
    row = api(staff).get("/api/integrations/inbound/", {"event": "ROBOT"}).json()["results"][0]
    assert row["query"] == {"token": "***"} and {"headers", "body", "authenticated", "dedupe_key"} <= set(row)


# Retry


@pytest.mark.django_db
def test_retry_makes_a_dead_row_due_now_with_the_same_event_id(recording_target, operator):
    IntegrationFactory()
    OrderFactory()
    row = IntegrationSync.objects.filter(content_type__model="order").get()
    IntegrationSync.objects.filter(pk=row.pk).update(status=SyncStatus.DEAD, attempts=10, last_error="503")

    response = api(operator).post(f"/api/integrations/syncs/{row.pk}/retry/")

    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["event_id"]) == ("pending", str(row.event_id))
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == (SyncStatus.PENDING, 0, "")
    dispatcher.drain()
    row.refresh_from_db()
    assert row.status == SyncStatus.SYNCED


@pytest.mark.django_db
def test_retry_refuses_synced_rows_and_stale_bitrix_state(operator):
    bitrix = IntegrationFactory(kind=IntegrationKind.BITRIX24, endpoint=BITRIX_URL)
    order = OrderFactory()
    order.title = "newer"
    order.save()
    created, updated = IntegrationSync.objects.filter(integration=bitrix, content_type__model="order").order_by(
        "sequence"
    )
    IntegrationSync.objects.filter(pk=created.pk).update(status=SyncStatus.DEAD)
    IntegrationSync.objects.filter(pk=updated.pk).update(status=SyncStatus.SYNCED)

    synced = api(operator).post(f"/api/integrations/syncs/{updated.pk}/retry/")
    stale = api(operator).post(f"/api/integrations/syncs/{created.pk}/retry/")

    assert synced.status_code == 409 and "resync" in synced.json()["detail"]
    assert stale.status_code == 409 and "newer row" in stale.json()["detail"]
    created.refresh_from_db()
    assert created.status == SyncStatus.DEAD


# Schema


def test_operations_schema_generates_without_warnings():
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    GENERATOR_STATS.reset()
    with GENERATOR_STATS.silence():
        schema = SchemaGenerator(patterns=urlpatterns).get_schema(request=None, public=True)

    assert not GENERATOR_STATS, dict(GENERATOR_STATS._warn_cache) | dict(GENERATOR_STATS._error_cache)
    paths = schema["paths"]
    assert {"object", "integration", "status", "event", "since", "page"} <= {
        p["name"] for p in paths["/api/integrations/syncs/"]["get"]["parameters"]
    }
    assert "/api/integrations/syncs/{sync_id}/retry/" in paths and "/api/integrations/status/" in paths


# Heartbeats


class FakeConsumer:
    """What worker_ready's sender (celery.worker.consumer.Consumer) offers: hostname and controller.concurrency."""

    hostname = "celery@test-host"
    controller = SimpleNamespace(concurrency=3)


@pytest.mark.django_db(transaction=True)
def test_worker_ready_starts_a_heartbeat_thread_and_shutdown_marks_the_worker_stopped(monkeypatch):
    from celery.signals import worker_ready, worker_shutdown

    monkeypatch.setattr(heartbeats, "WORKER_INTERVAL_SECONDS", 0.1)
    consumer = FakeConsumer()

    worker_ready.send(sender=consumer)
    try:
        first = Heartbeat.objects.get(name="celery@test-host")
        assert (first.kind, first.info["concurrency"], first.info["pid"]) == ("worker", 3, os.getpid())
        deadline = time.monotonic() + 5
        while Heartbeat.objects.get(pk=first.pk).seen_at == first.seen_at and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Heartbeat.objects.get(pk=first.pk).seen_at > first.seen_at  # the thread keeps beating
    finally:
        worker_shutdown.send(sender=None)

    row = Heartbeat.objects.get(name="celery@test-host")
    assert row.info["state"] == "stopped"
    assert heartbeats.worker_liveness()[0]["alive"] is False


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_reports_itself_and_its_clean_stop():
    env = {
        **os.environ,
        **child_database_env(),
        "REDIS_URL": django_settings.REDIS_URL,
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        "SECRET_KEY": "test-only",
        "FIELD_ENCRYPTION_KEYS": ",".join(django_settings.FIELD_ENCRYPTION_KEYS),  # reads this test's rows
    }
    command = [sys.executable, "-m", "celery", "-A", "app", "worker", "--pool=solo", "--without-gossip"]
    command += [
        "--without-mingle",
        "--without-heartbeat",
        "--concurrency=1",
        "-n",
        "hbtest@%h",
        "-I",
        "integrations.heartbeats",  # until integrations/apps.py imports it
    ]
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not Heartbeat.objects.filter(kind="worker").exists() and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stderr.read().decode()[-3000:]
            time.sleep(0.2)
        row = Heartbeat.objects.get(kind="worker")
        assert row.name.startswith("hbtest@") and row.info["pid"] == worker.pid
        assert row.info["concurrency"] == 1
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: worker_shutdown fires
        worker.wait(30)
    row.refresh_from_db()
    assert row.info["state"] == "stopped"


# Beat schedule stored for django-celery-beat


@pytest.mark.django_db
def test_beat_schedule_install_is_idempotent_and_keeps_operator_edits():
    from django_celery_beat.models import PeriodicTask

    from app.celery import BEAT_SCHEDULE
    from integrations.beat_defaults import install_beat_schedule

    migration = importlib.import_module("integrations.migrations.0002_beat_schedule")
    PeriodicTask.objects.filter(name__in=BEAT_SCHEDULE).delete()

    from django.apps import apps

    migration.forward(apps, None)
    tasks = {t.name: t for t in PeriodicTask.objects.filter(name__in=BEAT_SCHEDULE).select_related("interval")}
    assert {n: (t.task, t.interval.every, t.interval.period) for n, t in tasks.items()} == {
        n: (e["task"], e["every_seconds"], "seconds") for n, e in BEAT_SCHEDULE.items()
    }
    sweep = tasks["sweep_due_syncs"]
    sweep.enabled = False
    sweep.save()
    assert install_beat_schedule() == []  # second run: nothing to do, the operator's change stays
    assert PeriodicTask.objects.get(name="sweep_due_syncs").enabled is False


@pytest.mark.django_db(transaction=True)
def test_beat_start_installs_missing_defaults_and_keeps_operator_edits():
    from django_celery_beat.models import IntervalSchedule, PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    from app.celery import BEAT_SCHEDULE, install_missing_beat_defaults
    from app.celery import app as celery_app
    from integrations.beat_defaults import install_beat_schedule

    install_beat_schedule()
    sweep = PeriodicTask.objects.get(name="sweep_due_syncs")
    sweep.interval = IntervalSchedule.objects.create(every=1, period="seconds")  # an operator speeds it up
    sweep.save()
    PeriodicTask.objects.filter(name="reconcile_bitrix").delete()  # and someone deleted another one
    install_missing_beat_defaults()  # what `celery beat` runs at start-up (beat_init)
    scheduler = DatabaseScheduler(app=celery_app)
    assert set(BEAT_SCHEDULE) <= set(scheduler.schedule)
    assert PeriodicTask.objects.get(name="sweep_due_syncs").interval.every == 1
    assert (
        PeriodicTask.objects.get(name="reconcile_bitrix").interval.every
        == BEAT_SCHEDULE["reconcile_bitrix"]["every_seconds"]
    )
