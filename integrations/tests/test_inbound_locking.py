"""Inbound processing and locks, on real PostgreSQL with concurrent workers: no portal read inside a transaction or
under row locks, and batches that share orders lock them in one order (no deadlock)."""

import threading

import pytest
from django.db import connection

from integrations.inbound import processing
from integrations.inbound.processing import inbound_process
from integrations.models import InboundStatus, InboundWebhook
from integrations.sandbox.bitrix24 import BitrixSandbox
from integrations.tests.test_inbound_processing import (  # noqa: F401 - fixtures
    _link_another,
    deal_event,
    link_order_to_deal,
    secrets,
    sent,
    status_changes,
)
from orders.models import Order


class Gate:
    """Holds every portal call until opened; `arrived` counts the calls that reached it."""

    def __init__(self):
        self.arrived = threading.Semaphore(0)
        self.opened = threading.Event()

    def wait_arrival(self, timeout: float = 10.0) -> None:
        assert self.arrived.acquire(timeout=timeout), "no portal call arrived"


@pytest.fixture
def gated():
    box, gate = BitrixSandbox(enforce_rate_limit=False), Gate()
    real = box.handle

    def handle(verb, raw_path, *args):
        if raw_path.startswith("/rest/"):
            gate.arrived.release()
            gate.opened.wait(20)
        return real(verb, raw_path, *args)

    box.handle = handle
    box.start()
    yield box, gate
    gate.opened.set()
    box.stop()


def in_thread(call) -> tuple[threading.Thread, list]:
    """Run call in a thread with its own DB connection; its result lands in the list."""
    results: list = []

    def work():
        try:
            results.append(call())
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    return thread, results


def open_transactions() -> list[str]:
    """Other sessions of this database that sit in an open transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state LIKE 'idle in transaction%%'"
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("sent")
def test_no_transaction_or_row_lock_is_held_while_the_deal_is_read(client, gated):
    box, gate = gated
    order, deal_id, _ = link_order_to_deal(box)
    box.store.update("deal", deal_id, {"STAGE_ID": "PREPARATION"})
    row = deal_event(client, deal_id)
    thread, results = in_thread(lambda: inbound_process(inbound_id=row.pk))
    gate.wait_arrival()
    try:
        assert open_transactions() == []
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '1s'")
            try:  # an operator or the API writing the same rows meanwhile is not made to wait
                cursor.execute("UPDATE orders_order SET comment = 'edited meanwhile' WHERE id = %s", [order.pk])
                cursor.execute("UPDATE integrations_inboundwebhook SET queued_at = now() WHERE id = %s", [row.pk])
            finally:
                cursor.execute("SET lock_timeout = 0")
    finally:
        gate.opened.set()
        thread.join(30)
    order.refresh_from_db()
    assert results == [InboundStatus.PROCESSED]
    assert (order.status, order.comment) == ("confirmed", "edited meanwhile")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("sent")
def test_batches_sharing_orders_in_opposite_order_do_not_deadlock(client, gated, monkeypatch):
    box, gate = gated
    (first, first_deal, n8n), (second, second_deal, _) = link_order_to_deal(box), _link_another(box)
    for deal_id in (first_deal, second_deal):
        box.store.update("deal", deal_id, {"STAGE_ID": "PREPARATION"})
    # Each worker, once it changed its first order, waits for the other to have changed its own first order.
    both_changed, real = threading.Barrier(2), processing.order_change_status

    def change_then_meet(**kwargs):
        changed = real(**kwargs)
        try:
            both_changed.wait(timeout=3)
        except threading.BrokenBarrierError:
            pass
        return changed

    monkeypatch.setattr(processing, "order_change_status", change_then_meet)
    one = [deal_event(client, first_deal, ts="1"), deal_event(client, second_deal, ts="2")]
    worker_one, results_one = in_thread(lambda: inbound_process(inbound_id=one[0].pk))
    gate.wait_arrival()  # worker one holds its two calls (first, second) and reads their deals
    other = [deal_event(client, second_deal, ts="3"), deal_event(client, first_deal, ts="4")]
    worker_two, results_two = in_thread(lambda: inbound_process(inbound_id=other[0].pk))
    gate.wait_arrival()  # worker two holds the other two (second, first)
    gate.opened.set()
    worker_one.join(30)
    worker_two.join(30)

    rows = list(InboundWebhook.objects.filter(pk__in=[r.pk for r in one + other]).order_by("pk"))
    assert [r.error for r in rows] == [""] * 4
    assert sorted(r.status for r in rows) == ["ignored", "ignored", "processed", "processed"]
    assert [Order.objects.get(pk=o.pk).status for o in (first, second)] == ["confirmed", "confirmed"]
    assert len(status_changes(n8n)) == 2
    assert results_one and results_two


@pytest.mark.django_db
@pytest.mark.usefixtures("sent")
def test_a_claim_whose_worker_died_is_failed_retryable_and_its_late_finish_is_refused(client):
    from datetime import timedelta

    from django.utils import timezone

    from integrations.inbound import services

    row = deal_event(client, 7)
    _, [claimed] = services.inbound_claim(inbound_id=row.pk, limit=1)
    assert InboundWebhook.objects.get(pk=row.pk).status == InboundStatus.PROCESSING
    assert services.inbound_claim(inbound_id=row.pk, limit=5) == (None, [])  # not claimed twice
    long_ago = timezone.now() - timedelta(seconds=services.claim_lease_seconds() + 1)
    InboundWebhook.objects.filter(pk=row.pk).update(processed_at=long_ago)
    claimed.processed_at = long_ago

    services.inbound_requeue_stale()

    stored = InboundWebhook.objects.get(pk=row.pk)
    assert stored.status == InboundStatus.FAILED and stored.result == {"attempts": 1, "retryable": True}
    assert "worker stopped" in stored.error
    assert services.inbound_lock_claimed(rows=[claimed]) == set()  # the dead worker's claim is no longer its own
