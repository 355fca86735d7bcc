"""cleanup_history: keeps open, recent and still-retained rows; deletes the rest in batches, attempts with them."""

import itertools
import threading
from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations.models import (
    AttemptOutcome,
    Heartbeat,
    InboundStatus,
    InboundWebhook,
    IntegrationSync,
    SyncAttempt,
    SyncStatus,
)
from integrations.retention import cleanup_history
from integrations.tests.factories import IntegrationFactory
from orders.models import Order

pytestmark = pytest.mark.django_db
DAY = timedelta(days=1)
_object_ids = itertools.count(1000)


@pytest.fixture(autouse=True)
def retention_days(settings):
    settings.SYNC_RETENTION_DAYS = 90
    settings.SYNC_FAILED_RETENTION_DAYS = 365


@pytest.fixture
def integration():
    return IntegrationFactory()


def make_sync(integration, status: str, days_old: float, attempts: int = 0, **fields) -> IntegrationSync:
    """A finished (or open) row whose last change was `days_old` days ago, with `attempts` attempt rows."""
    row = IntegrationSync.objects.create(
        integration=integration,
        content_type=ContentType.objects.get_for_model(Order),
        object_id=str(next(_object_ids)),
        event_type="updated",
        sequence=1,
        status=status,
        occurred_at=timezone.now(),
        **fields,
    )
    stamp = timezone.now() - days_old * DAY
    IntegrationSync.objects.filter(pk=row.pk).update(updated_at=stamp, created_at=stamp)
    for n in range(attempts):
        SyncAttempt.objects.create(sync=row, number=n + 1, started_at=stamp, outcome=AttemptOutcome.RETRYABLE)
    return row


def make_inbound(status: str, days_old: float) -> InboundWebhook:
    row = InboundWebhook.objects.create(method="POST", path="/bitrix/webhook", status=status)
    InboundWebhook.objects.filter(pk=row.pk).update(received_at=timezone.now() - days_old * DAY)
    return row


def remaining(model, rows) -> set[int]:
    return set(model.objects.filter(pk__in=[r.pk for r in rows]).values_list("pk", flat=True))


def test_twelve_old_rows_go_in_three_batches_of_five_with_their_attempts(integration):
    old = [make_sync(integration, SyncStatus.SYNCED, 91, attempts=2) for _ in range(12)]

    result = cleanup_history(batch_size=5)

    assert (result["syncs"], result["attempts"], result["batches"], result["complete"]) == (12, 24, 3, True)
    assert not remaining(IntegrationSync, old)
    assert not SyncAttempt.objects.filter(sync_id__in=[r.pk for r in old]).exists()


def test_open_recent_and_still_retained_failures_are_kept(integration):
    kept = [
        make_sync(integration, SyncStatus.PENDING, 400, attempts=1),
        make_sync(integration, SyncStatus.IN_PROGRESS, 400),
        make_sync(integration, SyncStatus.RETRYING, 400, attempts=3),
        make_sync(integration, SyncStatus.SYNCED, 89),
        make_sync(integration, SyncStatus.DEAD, 200, attempts=10),
        make_sync(integration, SyncStatus.FAILED, 364),
    ]
    gone = [
        make_sync(integration, SyncStatus.SYNCED, 91),
        make_sync(integration, SyncStatus.SUPERSEDED, 91),
        make_sync(integration, SyncStatus.SKIPPED, 91),
        make_sync(integration, SyncStatus.DEAD, 366, attempts=10),
        make_sync(integration, SyncStatus.FAILED, 366, attempts=1),
    ]

    result = cleanup_history(batch_size=100)

    assert remaining(IntegrationSync, kept) == {r.pk for r in kept}
    assert not remaining(IntegrationSync, gone)
    assert (result["syncs"], result["attempts"]) == (5, 11)
    assert SyncAttempt.objects.count() == 1 + 3 + 10


def test_retention_days_come_from_settings(integration, settings):
    settings.SYNC_RETENTION_DAYS = 7
    row = make_sync(integration, SyncStatus.SYNCED, 8)

    cleanup_history()

    assert not remaining(IntegrationSync, [row])


def test_a_kept_row_pointing_at_a_deleted_one_is_unlinked_not_an_error(integration):
    winner = make_sync(integration, SyncStatus.SYNCED, 100)
    follower = make_sync(integration, SyncStatus.SUPERSEDED, 10, superseded_by=winner)

    cleanup_history()

    follower.refresh_from_db()
    assert follower.superseded_by_id is None
    assert not remaining(IntegrationSync, [winner])


def test_inbound_calls_are_deleted_by_status_and_age(integration):
    kept = [
        make_inbound(InboundStatus.RECEIVED, 400),  # never processed: an operator must see it
        make_inbound(InboundStatus.PROCESSED, 89),
        make_inbound(InboundStatus.FAILED, 200),
    ]
    gone = [make_inbound(s, 91) for s in ("processed", "ignored", "duplicate", "rejected")]
    gone.append(make_inbound(InboundStatus.FAILED, 366))

    result = cleanup_history(batch_size=2)

    assert remaining(InboundWebhook, kept) == {r.pk for r in kept}
    assert not remaining(InboundWebhook, gone)
    assert result["inbound"] == 5


def test_attempts_are_deleted_in_sql_without_loading_them(integration):
    for _ in range(3):
        make_sync(integration, SyncStatus.SYNCED, 100, attempts=3)

    with CaptureQueriesContext(connection) as queries:
        cleanup_history(batch_size=2)

    statements = [q["sql"].strip() for q in queries.captured_queries]
    assert not [s for s in statements if s.startswith("SELECT") and "integrations_syncattempt" in s]
    assert len([s for s in statements if "DELETE FROM integrations_integrationsync" in s]) == 2 + 1


def test_long_gone_workers_are_forgotten_but_beat_heartbeats_stay():
    now = timezone.now()
    Heartbeat.objects.create(name="celery@old-container", kind="worker", seen_at=now - 8 * DAY)
    Heartbeat.objects.create(name="celery@current", kind="worker", seen_at=now)
    Heartbeat.objects.create(name="cleanup_sync_history", kind="beat", seen_at=now - 30 * DAY)

    cleanup_history()

    assert set(Heartbeat.objects.values_list("name", flat=True)) == {"celery@current", "cleanup_sync_history"}


def test_time_budget_stops_between_batches_and_says_so(integration):
    for _ in range(4):
        make_sync(integration, SyncStatus.SYNCED, 100)

    result = cleanup_history(batch_size=1, max_seconds=0)

    assert (result["complete"], result["syncs"]) == (False, 0)
    assert IntegrationSync.objects.count() == 4


def test_the_periodic_task_cleans_up_and_reports_its_run(integration):
    from integrations.tasks import cleanup_sync_history

    row = make_sync(integration, SyncStatus.SYNCED, 100)

    assert cleanup_sync_history()["syncs"] == 1
    assert not remaining(IntegrationSync, [row])
    assert Heartbeat.objects.filter(kind="beat", name="cleanup_sync_history").exists()


@pytest.mark.django_db(transaction=True)
def test_a_row_locked_by_a_concurrent_replay_is_skipped_not_waited_for(integration):
    locked, free = make_sync(integration, SyncStatus.DEAD, 400), make_sync(integration, SyncStatus.DEAD, 400)
    holding, release = threading.Event(), threading.Event()

    def replay_in_progress():
        try:
            with transaction.atomic():
                IntegrationSync.objects.select_for_update().get(pk=locked.pk)
                holding.set()
                release.wait(10)
                IntegrationSync.objects.filter(pk=locked.pk).update(status=SyncStatus.PENDING)
        finally:
            connection.close()

    thread = threading.Thread(target=replay_in_progress)
    thread.start()
    assert holding.wait(10)
    try:
        result = cleanup_history(max_seconds=5)
    finally:
        release.set()
        thread.join(10)

    assert result["syncs"] == 1
    assert remaining(IntegrationSync, [locked, free]) == {locked.pk}
    locked.refresh_from_db()
    assert locked.status == SyncStatus.PENDING
