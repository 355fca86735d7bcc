"""Costs that must not grow with the size of the history or of the backlog (issue 20): checked on the SQL."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations import dispatcher, selectors, services, tally
from integrations.metrics import SyncCollector
from integrations.models import OPEN_STATUSES, IntegrationSync, SyncStatus, SyncStatusTally
from integrations.policy import Verdict
from integrations.tests.factories import IntegrationFactory
from integrations.tests.support import answer
from integrations.tests.test_engine import run_in_threads
from orders import services as order_services
from orders.tests.factories import OrderFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_due_work_sweep_selects_one_row_per_integration_not_per_sync():
    integration = IntegrationFactory()
    for _ in range(3):
        OrderFactory()
    past = timezone.now() - timedelta(seconds=5)
    IntegrationSync.objects.filter(integration=integration).update(status=SyncStatus.PENDING, next_attempt_at=past)
    with CaptureQueriesContext(connection) as queries:
        assert dispatcher.integrations_with_due_work() == [integration.pk]
    # One query over the integrations, each asking for its first due row: never DISTINCT over the due rows (the
    # model's -id ordering once made that one row per due sync), never a read of them all.
    [query] = [q["sql"] for q in queries.captured_queries]
    assert "EXISTS" in query and "DISTINCT" not in query, query


def grouped_counts() -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {}
    for row in IntegrationSync.objects.order_by().values("integration_id", "status").annotate(n=Count("id")):
        counts.setdefault(row["integration_id"], {})[row["status"]] = row["n"]
    return counts


def test_status_counts_follow_every_kind_of_change_without_a_history_scan(recording_target):
    first, second = IntegrationFactory(), IntegrationFactory()
    for _ in range(4):
        OrderFactory()
    assert selectors.sync_counts() == grouped_counts()
    recording_target.script = [answer(Verdict.TERMINAL, 400), answer(Verdict.RETRYABLE, 503)]
    dispatcher.drain()
    assert selectors.sync_counts() == grouped_counts()
    # Bulk changes the way operators and retention make them: finished → open, finished → finished, deletes.
    IntegrationSync.objects.filter(status=SyncStatus.FAILED).update(status=SyncStatus.PENDING)
    two = IntegrationSync.objects.filter(integration=first, status=SyncStatus.SYNCED).values_list("pk", flat=True)[:2]
    IntegrationSync.objects.filter(pk__in=list(two)).update(status=SyncStatus.SUPERSEDED)
    assert selectors.sync_counts() == grouped_counts()
    tally.compact()
    IntegrationSync.objects.filter(integration=second, status=SyncStatus.SYNCED).delete()
    IntegrationSync.objects.create(
        integration=second,
        content_type_id=IntegrationSync.objects.first().content_type_id,
        object_id="x",
        event_type="updated",
        sequence=99,
        status=SyncStatus.SKIPPED,
        occurred_at=timezone.now(),
    )
    assert selectors.sync_counts() == grouped_counts()
    tally.compact()
    assert selectors.sync_counts() == grouped_counts()
    assert SyncStatusTally.objects.count() == sum(
        1 for by_status in grouped_counts().values() for s in by_status if s not in OPEN_STATUSES
    )
    second.delete()
    tally.compact()
    assert set(SyncStatusTally.objects.values_list("integration_id", flat=True)) == {first.pk}

    with CaptureQueriesContext(connection) as queries:
        list(SyncCollector().collect())
    history = [q["sql"] for q in queries.captured_queries if "integrations_integrationsync" in q["sql"]]
    assert history
    for sql in history:
        # Only open rows (partial indexes) or the last hour (status, updated_at) are read; never all of history.
        assert "WHERE" in sql.upper(), sql


def test_claim_reads_only_open_rows_through_their_partial_indexes():
    integration = IntegrationFactory()
    OrderFactory()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        params = {"lease": 30, "grace": 0, "token": None, "integration": integration.pk, "limit": 50}
        cursor.execute("EXPLAIN (COSTS OFF) " + services._CLAIM_SQL, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        transaction.set_rollback(True)
    # Not the primary key in id order over the whole history, nor the object's whole history for the anti-join.
    assert "sync_claim_idx" in plan, plan
    assert "sync_open_object_idx" in plan, plan
    assert "clock_timestamp" not in plan, plan  # volatile: never an index condition


def object_rows(order, integration):
    return IntegrationSync.objects.filter(
        integration=integration, content_type__model="order", object_id=str(order.pk)
    ).order_by("sequence")


def test_rows_held_back_by_their_object_are_marked_once_and_released_one_at_a_time(recording_target):
    integration = IntegrationFactory()
    order = OrderFactory()
    for i in range(5):
        order_services.order_update(order=order, data={"title": f"t{i}"})
    others = [OrderFactory() for _ in range(3)]

    assert dispatcher.dispatch_once(integration.pk, limit=2) == 2  # user.created + order.created of the first order
    rows = list(object_rows(order, integration).values_list("status", "waiting"))
    # The created row went out and the first update, now at the head, was released; the claim's window (twice the
    # batch) had also reached the second update, which stays marked until the first closes.
    assert rows[:3] == [("synced", False), ("pending", False), ("pending", True)]
    assert {status for status, _ in rows[3:]} == {"pending"}

    dispatcher.drain()
    assert not IntegrationSync.objects.filter(waiting=True).exists()
    assert not IntegrationSync.objects.exclude(status=SyncStatus.SYNCED).exists()
    updates = [c["data"]["title"] for c in recording_target.calls if c["event"] == "updated"]
    assert updates == [f"t{i}" for i in range(5)]  # in order
    assert len(recording_target.creates()) == 2 + 2 * len(others)


def test_a_retried_row_comes_back_unmarked_and_a_lost_mark_is_repaired_by_the_sweep(recording_target):
    integration = IntegrationFactory()
    order = OrderFactory()
    order_services.order_update(order=order, data={"title": "a"})
    created, update = object_rows(order, integration)
    IntegrationSync.objects.filter(pk=update.pk).update(waiting=True, status=SyncStatus.FAILED)
    assert IntegrationSync.objects.get(pk=update.pk).waiting is False  # a closed row is never waiting

    # A mark whose holder closed unseen (two closers at once): nothing would ever claim the row again but the sweep.
    IntegrationSync.objects.filter(pk=update.pk).update(status=SyncStatus.PENDING)
    IntegrationSync.objects.filter(pk=created.pk).update(status=SyncStatus.SYNCED)
    IntegrationSync.objects.filter(pk=update.pk).update(waiting=True)
    dispatcher.drain(integration_id=integration.pk)
    assert IntegrationSync.objects.get(pk=update.pk).status == SyncStatus.PENDING
    assert services.sync_waiting_repair() == 1
    dispatcher.drain(integration_id=integration.pk)
    assert IntegrationSync.objects.get(pk=update.pk).status == SyncStatus.SYNCED


def test_concurrent_dispatchers_deliver_every_object_in_order_with_marks(recording_target):
    integration = IntegrationFactory()
    orders = [OrderFactory() for _ in range(6)]
    for i in range(8):
        for order in orders:
            order_services.order_update(order=order, data={"title": f"{order.pk}-{i}"})
    recording_target.script = [answer(Verdict.RETRYABLE, 503)] * 5  # some heads retry: blockers linger

    def until_done():
        for _ in range(400):
            if not dispatcher.dispatch_once(integration.pk, limit=5):
                if not IntegrationSync.objects.filter(status__in=OPEN_STATUSES).exists():
                    return
                IntegrationSync.objects.filter(status=SyncStatus.RETRYING).update(next_attempt_at=timezone.now())

    run_in_threads(6, until_done)
    assert not IntegrationSync.objects.exclude(status=SyncStatus.SYNCED).exists()
    assert not IntegrationSync.objects.filter(waiting=True).exists()
    for order in orders:
        sent = [
            c["data"]["title"]
            for c in recording_target.calls
            if c["event"] == "updated" and c["verdict"] == "ok" and c["data"]["title"].startswith(f"{order.pk}-")
        ]
        assert sent == [f"{order.pk}-{i}" for i in range(8)], sent
