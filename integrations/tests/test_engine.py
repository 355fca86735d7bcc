"""The delivery engine on real PostgreSQL with real threads: exactly-once creates, ordering, retries, leases."""

import threading
from datetime import timedelta

import pytest
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from integrations import dispatcher, services
from integrations.models import EventType, ExternalLink, IntegrationSync, SyncAttempt, SyncStatus
from integrations.policy import Verdict
from integrations.services import PAUSE_AFTER_FAILURES
from integrations.tests.factories import IntegrationFactory
from integrations.tests.support import answer
from orders import services as order_services
from orders.tests.factories import OrderFactory
from users import services as user_services

pytestmark = pytest.mark.django_db(transaction=True)


def order_syncs(order, integration):
    return IntegrationSync.objects.filter(
        integration=integration, content_type__model="order", object_id=str(order.pk)
    ).order_by("sequence")


def run_in_threads(n: int, fn) -> list:
    barrier = threading.Barrier(n)
    results, errors = [], []

    def work():
        try:
            barrier.wait()
            results.append(fn())
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def test_sixteen_concurrent_dispatchers_deliver_one_create(recording_target):
    integration = IntegrationFactory()
    order = OrderFactory()
    run_in_threads(16, lambda: dispatcher.dispatch_once(integration.pk))
    order_creates = [c for c in recording_target.creates() if c["data"].get("title") == order.title]
    assert len(order_creates) == 1
    assert order_syncs(order, integration).get().status == SyncStatus.SYNCED
    assert (
        ExternalLink.objects.filter(
            integration=integration, object_id=str(order.pk), content_type__model="order"
        ).count()
        == 1
    )


def test_sixteen_concurrent_recorders_of_created_leave_one_row(recording_target):
    from integrations import outbox

    integration = IntegrationFactory()
    order = OrderFactory()
    IntegrationSync.objects.filter(content_type__model="order").delete()
    second = IntegrationFactory(name="second")
    results = run_in_threads(16, lambda: outbox.record(order, EventType.CREATED))
    for each in (integration, second):
        assert order_syncs(order, each).filter(event_type=EventType.CREATED).count() == 1
    # Exactly one recorder per integration got its row back (and wakes a worker for it); the others got nothing.
    returned = [row.integration_id for rows in results for row in rows]
    assert sorted(returned) == sorted([integration.pk, second.pk])


def test_created_for_an_integration_added_later_is_written_only_for_it(recording_target):
    from integrations import outbox

    first = IntegrationFactory()
    order = OrderFactory()  # its created row for `first` exists
    later = IntegrationFactory(name="later")
    rows = outbox.record(order, EventType.CREATED)
    assert [(r.integration_id, r.event_type, r.status) for r in rows] == [(later.pk, "created", SyncStatus.PENDING)]
    assert rows[0].pk == IntegrationSync.objects.get(integration=later, object_id=str(order.pk)).pk
    assert order_syncs(order, first).filter(event_type=EventType.CREATED).count() == 1


@pytest.mark.parametrize(
    "event_type", [EventType.CREATED, EventType.UPDATED, EventType.STATUS_CHANGED, EventType.DELETED]
)
def test_event_filter_in_sql_matches_integration_wants(recording_target, event_type):
    from integrations import outbox

    order = OrderFactory()
    IntegrationSync.objects.all().delete()
    integrations = [
        IntegrationFactory(name="all", event_filter=[]),
        IntegrationFactory(name="status only", event_filter=["order.status_changed"]),
        IntegrationFactory(name="mixed", event_filter=["order.created", "user.updated", "order.deleted"]),
        IntegrationFactory(name="users only", event_filter=["user.created"]),
        IntegrationFactory(name="disabled", event_filter=["order.updated"], enabled=False),
    ]
    rows = outbox.record(order, event_type)
    expected = [i.pk for i in integrations if i.wants(f"order.{event_type}")]
    assert [r.integration_id for r in rows] == expected
    assert {r.integration_id: r.status for r in rows}.get(integrations[-1].pk, SyncStatus.SKIPPED) == SyncStatus.SKIPPED


def test_worker_dying_after_claim_is_completed_by_another_after_lease(recording_target, settings):
    integration = IntegrationFactory()
    order = OrderFactory()
    IntegrationSync.objects.exclude(content_type__model="order").delete()
    claimed = services.sync_claim_due(integration=integration)  # the "dead" worker: claims, never completes
    assert [c.sync.object_id for c in claimed] == [str(order.pk)]
    assert dispatcher.dispatch_once(integration.pk) == 0  # lease still held: nobody else touches it
    IntegrationSync.objects.filter(pk=claimed[0].id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert dispatcher.dispatch_once(integration.pk) == 1
    row = order_syncs(order, integration).get()
    assert row.status == SyncStatus.SYNCED and row.attempts == 2
    assert len(recording_target.creates()) == 1
    # The lost round is in the history: attempt 1 unknown, with the claim token its requests carried.
    lost, ok = row.attempt_rows.order_by("number")
    assert (lost.number, lost.outcome, lost.error_class) == (1, "unknown", "LeaseExpired")
    assert lost.claim_token == claimed[0].sync.claim_token and "may have been sent" in lost.error_message
    assert (ok.number, ok.outcome) == (2, "ok") and ok.claim_token not in (None, lost.claim_token)
    # The dead worker's late completion cannot overwrite the row it lost.
    from integrations.targets.base import Outcome

    assert (
        services.sync_complete(claimed=claimed[0], outcome=Outcome(verdict=Verdict.TERMINAL), started_at=timezone.now())
        is None
    )
    row.refresh_from_db()
    assert row.status == SyncStatus.SYNCED


def test_update_recorded_while_create_in_flight_waits_then_goes_out_as_update(recording_target):
    integration = IntegrationFactory()
    order = OrderFactory()
    IntegrationSync.objects.exclude(content_type__model="order").delete()
    recording_target.gate = threading.Event()
    worker = threading.Thread(target=lambda: (dispatcher.dispatch_once(integration.pk), connection.close()))
    worker.start()
    assert recording_target.entered.wait(10)
    order_services.order_update(order=order, data={"title": "changed while creating"})
    assert dispatcher.dispatch_once(integration.pk) == 0  # the update never overtakes the unfinished create
    recording_target.gate.set()
    worker.join(10)
    recording_target.gate = None
    assert dispatcher.dispatch_once(integration.pk) == 1
    actions = [(c["event"], c["action"]) for c in recording_target.calls]
    assert actions == [("created", "create"), ("updated", "update")]
    assert recording_target.calls[1]["remote_id"] == "100"
    assert recording_target.calls[1]["data"]["title"] == "changed while creating"


def test_two_updates_append_two_rows_and_second_created_is_ignored(recording_target):
    from integrations import outbox

    integration = IntegrationFactory()
    order = OrderFactory()
    order_services.order_update(order=order, data={"title": "a"})
    order_services.order_update(order=order, data={"title": "b"})
    outbox.record(order, EventType.CREATED)
    rows = list(order_syncs(order, integration).values_list("event_type", "sequence"))
    assert rows == [("created", 1), ("updated", 2), ("updated", 3)]


def test_status_change_is_its_own_event_with_changes(recording_target):
    integration = IntegrationFactory()
    order = OrderFactory()
    order_services.order_change_status(order=order, status="confirmed")
    row = order_syncs(order, integration).last()
    assert row.event_type == EventType.STATUS_CHANGED
    assert row.changes == {"status": ["new", "confirmed"]}


def test_terminal_error_fails_at_once(recording_target):
    integration = IntegrationFactory()
    OrderFactory()
    IntegrationSync.objects.exclude(content_type__model="order").delete()
    recording_target.script = [answer(Verdict.TERMINAL, 422, error="validation failed")]
    dispatcher.dispatch_once(integration.pk)
    row = IntegrationSync.objects.get(integration=integration)
    assert row.status == SyncStatus.FAILED and row.attempts == 1 and "validation" in row.last_error
    assert SyncAttempt.objects.get(sync=row).outcome == "terminal"


def test_retryable_errors_back_off_growing_then_dead(recording_target, settings):
    settings.SYNC_MAX_ATTEMPTS = 4
    integration = IntegrationFactory()
    OrderFactory()
    IntegrationSync.objects.exclude(content_type__model="order").delete()
    recording_target.script = [answer(Verdict.RETRYABLE, 503) for _ in range(4)]
    ceilings = []
    for _ in range(4):
        IntegrationSync.objects.filter(integration=integration).update(next_attempt_at=timezone.now())
        before = timezone.now()
        assert dispatcher.dispatch_once(integration.pk) == 1
        row = IntegrationSync.objects.get(integration=integration)
        if row.status == SyncStatus.RETRYING:
            ceilings.append((row.next_attempt_at - before).total_seconds())
    assert row.status == SyncStatus.DEAD and row.attempts == 4
    assert SyncAttempt.objects.filter(sync=row).count() == 4
    assert all(0 <= d <= 5 * 2**i + 1 for i, d in enumerate(ceilings))


def test_retry_after_is_respected(recording_target):
    integration = IntegrationFactory()
    OrderFactory()
    IntegrationSync.objects.exclude(content_type__model="order").delete()
    recording_target.script = [answer(Verdict.RETRYABLE, 429, retry_after=120)]
    before = timezone.now()
    dispatcher.dispatch_once(integration.pk)
    row = IntegrationSync.objects.get(integration=integration)
    assert (row.next_attempt_at - before).total_seconds() >= 119


def test_deferred_outcome_does_not_burn_attempts(recording_target):
    integration = IntegrationFactory()
    OrderFactory()
    IntegrationSync.objects.exclude(content_type__model="order").delete()
    recording_target.script = [answer(Verdict.DEFERRED, 503, retry_after=0) for _ in range(3)]
    for _ in range(3):
        dispatcher.dispatch_once(integration.pk)
    row = IntegrationSync.objects.get(integration=integration)
    assert row.attempts == 0 and row.status == SyncStatus.PENDING
    dispatcher.dispatch_once(integration.pk)
    row.refresh_from_db()
    assert row.status == SyncStatus.SYNCED and row.attempts == 1


def test_task_run_twice_does_no_harm(recording_target):
    from integrations.tasks import dispatch_sync

    integration = IntegrationFactory()
    order = OrderFactory()
    sync_id = order_syncs(order, integration).get().pk
    dispatch_sync(sync_id)
    dispatch_sync(sync_id)
    assert len([c for c in recording_target.calls if c["sync"] == sync_id]) == 1


def test_integration_disabled_mid_flight_ends_skipped_with_reason(recording_target):
    integration = IntegrationFactory()
    OrderFactory()
    integration.enabled = False
    integration.save()
    dispatcher.drain()
    assert set(IntegrationSync.objects.values_list("status", flat=True)) == {SyncStatus.SKIPPED}
    assert "disabled" in IntegrationSync.objects.first().last_error
    assert recording_target.calls == []


def test_disabled_integration_records_skipped_rows(recording_target):
    IntegrationFactory(enabled=False)
    OrderFactory()
    assert set(IntegrationSync.objects.values_list("status", flat=True)) == {SyncStatus.SKIPPED}


def test_target_crash_on_bad_data_ends_terminal_not_loop(recording_target):
    integration = IntegrationFactory()
    OrderFactory()

    def bad(item):
        raise ValueError("payload cannot be serialised")

    recording_target.script = [bad]
    dispatcher.dispatch_once(integration.pk, limit=1)
    row = IntegrationSync.objects.filter(integration=integration).order_by("id").first()
    assert row.status == SyncStatus.FAILED and "serialised" in row.last_error


def test_object_deleted_before_sync_still_delivers_its_snapshot(recording_target):
    IntegrationFactory()
    order = OrderFactory()
    title = order.title
    order_services.order_delete(order=order)
    dispatcher.drain()
    events = [(c["event"], c["data"]["title"]) for c in recording_target.calls if "title" in c["data"]]
    assert events == [("created", title), ("deleted", title)]


def test_coalescing_target_sends_latest_state_once_and_supersedes(recording_target):
    recording_target.coalesces = True
    integration = IntegrationFactory()
    order = OrderFactory()
    IntegrationSync.objects.exclude(content_type__model="order").delete()
    for i in range(10):
        order_services.order_update(order=order, data={"title": f"v{i}"})
    dispatcher.drain()
    assert len(recording_target.calls) == 1
    assert recording_target.calls[0]["data"]["title"] == "v9"
    statuses = list(order_syncs(order, integration).values_list("status", flat=True))
    assert statuses == [SyncStatus.SYNCED] + [SyncStatus.SUPERSEDED] * 10


def failing_orders(recording_target, n: int):
    """An integration with n orders' created rows pending and a target that answers 500 to each of them."""
    integration = IntegrationFactory()
    for _ in range(n):
        OrderFactory()
    IntegrationSync.objects.exclude(content_type__model="order").delete()
    recording_target.script = [answer(Verdict.RETRYABLE, 500) for _ in range(n)]
    return integration


def test_endpoint_failing_for_long_is_paused_not_hammered(recording_target):
    integration = failing_orders(recording_target, PAUSE_AFTER_FAILURES)
    for _ in range(PAUSE_AFTER_FAILURES):  # one failing delivery round each
        assert dispatcher.dispatch_once(integration.pk, limit=1) == 1
    integration.refresh_from_db()
    assert integration.consecutive_failures == PAUSE_AFTER_FAILURES
    assert integration.paused_until and integration.paused_until > timezone.now()
    IntegrationSync.objects.update(next_attempt_at=timezone.now())
    calls = len(recording_target.calls)
    assert dispatcher.dispatch_once(integration.pk) == 0  # paused: nothing is sent
    assert len(recording_target.calls) == calls


def test_one_failed_round_of_many_rows_counts_once_towards_pausing(recording_target):
    """A batch call failing for 20 rows is one failure of the endpoint: it must not pause the integration at once."""
    integration = failing_orders(recording_target, PAUSE_AFTER_FAILURES)
    assert dispatcher.dispatch_once(integration.pk, limit=PAUSE_AFTER_FAILURES) == PAUSE_AFTER_FAILURES
    integration.refresh_from_db()
    assert integration.consecutive_failures == 1
    assert integration.paused_until is None
    assert integration.last_failure_at is not None


def test_pause_doubles_per_further_failed_round_and_a_success_ends_it(recording_target):
    integration = failing_orders(recording_target, PAUSE_AFTER_FAILURES + 1)
    for _ in range(PAUSE_AFTER_FAILURES):
        dispatcher.dispatch_once(integration.pk, limit=1)
    integration.refresh_from_db()
    first = (integration.paused_until - integration.last_failure_at).total_seconds()
    integration.paused_until = None  # the pause is over
    integration.save(update_fields=["paused_until"])
    IntegrationSync.objects.update(next_attempt_at=timezone.now())
    dispatcher.dispatch_once(integration.pk, limit=1)
    integration.refresh_from_db()
    second = (integration.paused_until - integration.last_failure_at).total_seconds()
    assert (first, second, integration.consecutive_failures) == (30, 60, PAUSE_AFTER_FAILURES + 1)
    integration.paused_until = None
    integration.save(update_fields=["paused_until"])
    recording_target.script = [answer(Verdict.OK, 200)]
    IntegrationSync.objects.update(next_attempt_at=timezone.now())
    dispatcher.dispatch_once(integration.pk, limit=1)
    integration.refresh_from_db()
    assert (integration.consecutive_failures, integration.paused_until) == (0, None)
    assert integration.last_success_at and integration.last_success_at > integration.last_failure_at


def test_concurrent_failed_rounds_are_all_counted(recording_target):
    """Rounds completing at the same moment each count: the increment happens in the row, not in a stale copy."""
    from integrations.targets.base import Outcome

    integration = IntegrationFactory()

    def failed_round():
        with transaction.atomic():
            services._count_round(integration.pk, [Outcome(verdict=Verdict.RETRYABLE)], timezone.now())

    run_in_threads(12, failed_round)
    integration.refresh_from_db()
    assert integration.consecutive_failures == 12


def test_round_bookkeeping_does_not_overwrite_an_operator_edit(recording_target):
    """The endpoint changed in the admin while a round was delivering: completing the round keeps the new one."""
    integration = failing_orders(recording_target, 1)
    edited_meanwhile = type(integration).objects.filter(pk=integration.pk)
    failing = recording_target.script.pop()
    recording_target.script = [
        lambda item: (edited_meanwhile.update(endpoint="http://127.0.0.1:9/new-endpoint"), failing(item))[1]
    ]
    dispatcher.dispatch_once(integration.pk)
    integration.refresh_from_db()
    assert integration.endpoint == "http://127.0.0.1:9/new-endpoint" and integration.consecutive_failures == 1


def test_replayed_old_row_on_state_target_sends_newest_state(recording_target):
    recording_target.coalesces = True
    integration = IntegrationFactory()
    order = OrderFactory()
    IntegrationSync.objects.exclude(content_type__model="order").delete()
    order_services.order_update(order=order, data={"title": "old"})
    dispatcher.drain()
    order_services.order_update(order=order, data={"title": "newest"})
    dispatcher.drain()
    old_row = order_syncs(order, integration).filter(changes__title__1="old").get()
    services.sync_replay(sync=old_row)
    dispatcher.drain()
    assert recording_target.calls[-1]["data"]["title"] == "newest"


def test_queue_log_lines_carry_the_target_prefix_and_ids(caplog):
    from integrations.models import IntegrationKind

    IntegrationFactory(kind=IntegrationKind.BITRIX24, endpoint="http://127.0.0.1:9/rest/1/code/")
    IntegrationFactory(kind=IntegrationKind.N8N)
    with caplog.at_level("INFO", logger="integrations.outbox"):
        order = OrderFactory()
        order_services.order_update(order=order, data={"title": "changed"})
        user_services.user_update(user=order.user, data={"first_name": "Renamed"})
    lines = [r.getMessage() for r in caplog.records if r.name == "integrations.outbox"]
    prefixes = [line.split(" ", 1)[0] for line in lines]
    assert prefixes.count("[QUEUE_CONTACT]") == 1  # the order's customer, created by the factory
    assert prefixes.count("[QUEUE_DEAL]") == 1
    assert prefixes.count("[QUEUE_DEAL_UPDATE]") == 1
    assert prefixes.count("[QUEUE_CONTACT_UPDATE]") == 1
    assert prefixes.count("[QUEUE]") == 4  # n8n: user.created, order.created, order.updated, user.updated
    deal_line = next(line for line in lines if line.startswith("[QUEUE_DEAL] "))
    assert f"order.created {order.pk} sync=" in deal_line
    assert "code" not in " ".join(lines)
