"""A lease covers a whole delivery round, over real HTTP: a portal or receiver slower than the lease never makes a
second deal nor reorders an object's n8n events. Timing is scaled down: a 3 s lease, calls of at most 2.5 s."""

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from integrations import dispatcher, services
from integrations.models import IntegrationSync, SyncStatus
from integrations.targets.bitrix_limits import bitrix_client_for
from integrations.tests.support import drain_all
from orders import services as order_services
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)
LEASE = 3
CALL_TIMEOUT = (0.5, 2.0)  # connect, read: a call ends within 2.5 s, inside the 3 s lease


@pytest.fixture
def scaled(settings):
    settings.SYNC_LEASE_SECONDS = LEASE
    settings.BITRIX_TIMEOUT = CALL_TIMEOUT
    settings.N8N_TIMEOUT = CALL_TIMEOUT
    return settings


class Workers:
    """n real workers (threads, each with its own DB connection) racing on one integration until stopped."""

    def __init__(self, integration_id: int, n: int = 2):
        self.integration_id, self.stop, self.errors = integration_id, threading.Event(), []
        self.threads = [threading.Thread(target=self._run, name=f"worker-{i}") for i in range(n)]

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                if not dispatcher.dispatch_once(self.integration_id):
                    self.stop.wait(0.05)
        except Exception as exc:  # noqa: BLE001 - surfaced by the test
            self.errors.append(exc)
        finally:
            connection.close()

    def __enter__(self) -> "Workers":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not self.errors, self.errors


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def nothing_open(integration) -> bool:
    open_statuses = [SyncStatus.PENDING, SyncStatus.RETRYING, SyncStatus.IN_PROGRESS]
    return not IntegrationSync.objects.filter(integration=integration, status__in=open_statuses).exists()


def deals_for(sandbox, order) -> list:
    return [d for d in sandbox.deals.values() if str(d.get("ORIGIN_ID")) == str(order.pk)]


def contacts_for(sandbox, user) -> list:
    return [c for c in sandbox.contacts.values() if str(c.get("ORIGIN_ID")) == str(user.pk)]


def in_thread(fn) -> threading.Thread:
    def run():
        try:
            fn()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def row_of(integration, obj, model: str, event_type: str = "created") -> IntegrationSync:
    return IntegrationSync.objects.get(
        integration=integration, content_type__model=model, object_id=str(obj.pk), event_type=event_type
    )


def test_portal_slower_than_the_lease_still_makes_exactly_one_deal_per_order(
    bitrix_sandbox, bitrix_integration, scaled
):
    # The round: contact add, then deal add, each answered after 1.7 s (within the 2.5 s call timeout, 3.4 s in all).
    bitrix_sandbox.set_faults(slow_seconds=1.7, timeout_seconds=3)
    bitrix_sandbox.fail_next(2, "slow")
    order = OrderFactory()
    with Workers(bitrix_integration.pk):
        assert wait_until(lambda: nothing_open(bitrix_integration), 20)
    assert len(deals_for(bitrix_sandbox, order)) == 1
    assert len(contacts_for(bitrix_sandbox, order.user)) == 1
    assert row_of(bitrix_integration, order, "order").status == SyncStatus.SYNCED


def test_a_round_that_loses_its_lease_stops_and_releases_what_it_did_not_send(
    bitrix_sandbox, bitrix_integration, scaled
):
    # One token per 8.3 s: the round's second call waits for its token past the end of the 3 s lease, and past the
    # one more worst-case call (2.5 s) after which another worker may take the rows over.
    bitrix_integration.rate_limit = "0.12/1"
    bitrix_integration.save()
    user = UserFactory()
    order = order_services.order_create(user=user, title="late round", amount="5.00")
    first = in_thread(lambda: dispatcher.dispatch_once(bitrix_integration.pk))
    assert wait_until(lambda: len(bitrix_sandbox.requests) == 1, 5)  # the contact add went out
    user_row = row_of(bitrix_integration, user, "user")
    first_token = user_row.claim_token
    wait = (user_row.lease_expires_at - timezone.now()).total_seconds() + sum(CALL_TIMEOUT) + 0.3
    time.sleep(max(wait, 0))
    # Another worker takes over part of the expired claim (the user's row) while the first still waits for a token.
    [taken] = services.sync_claim_due(integration=bitrix_integration, limit=1)
    assert taken.id == user_row.pk
    first.join(20)

    # The first worker sent nothing once its lease was gone.
    assert [r["request_id"] for r in bitrix_sandbox.requests] == [f"sync:{first_token}"]
    # What it still held and had not sent is released at once, without burning an attempt.
    order_row = row_of(bitrix_integration, order, "order")
    assert order_row.status == SyncStatus.PENDING and order_row.attempts == 0 and order_row.claim_token is None
    released = order_row.attempt_rows.get()
    assert released.outcome == "deferred" and "not sent" in released.error_message
    # Its late result for the row it lost is kept as an attempt only: the row stays the other worker's.
    user_row.refresh_from_db()
    assert user_row.status == SyncStatus.IN_PROGRESS and user_row.claim_token == taken.sync.claim_token
    late = user_row.attempt_rows.values_list("outcome", "error_class", "claim_token")
    assert sorted(late) == [("ok", "", first_token), ("unknown", "LeaseExpired", first_token)]

    # The other worker dies too; once its lease is over, the rows end with one contact and one deal.
    IntegrationSync.objects.filter(pk=user_row.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=10))
    bitrix_integration.rate_limit = "2/50"
    bitrix_integration.save()
    drain_all()
    assert len(deals_for(bitrix_sandbox, order)) == 1 and len(contacts_for(bitrix_sandbox, user)) == 1
    assert row_of(bitrix_integration, order, "order").status == SyncStatus.SYNCED


def test_a_takeover_does_not_create_while_the_earlier_holders_create_may_be_in_flight(
    bitrix_sandbox, bitrix_integration, scaled
):
    user = UserFactory()
    drain_all()  # the contact exists and is linked
    order = order_services.order_create(user=user, title="in flight", amount="5.00")
    [held] = services.sync_claim_due(integration=bitrix_integration)  # the earlier holder of the row
    # Just before its lease ends, the earlier holder's create goes out and is answered (and applied) 1.5 s later.
    time.sleep(max((held.sync.lease_expires_at - timezone.now()).total_seconds() - 0.3, 0))
    bitrix_sandbox.set_faults(slow_seconds=1.5, timeout_seconds=3)
    bitrix_sandbox.fail_next(1, "slow")
    client = bitrix_client_for(bitrix_integration)
    fields = {"TITLE": "in flight", "ORIGINATOR_ID": django_settings.BITRIX_ORIGINATOR_ID, "ORIGIN_ID": str(order.pk)}
    earlier = threading.Thread(target=lambda: client.call("crm.deal.add", {"fields": fields}))
    earlier.start()
    time.sleep(0.5)  # the lease has now expired; the create is still in flight
    with Workers(bitrix_integration.pk, n=1):
        assert wait_until(lambda: nothing_open(bitrix_integration), 15)
    earlier.join(10)
    assert len(deals_for(bitrix_sandbox, order)) == 1
    assert row_of(bitrix_integration, order, "order").status == SyncStatus.SYNCED


def test_n8n_receiver_slower_than_the_lease_keeps_each_objects_events_in_order(n8n_receiver, n8n_integration, scaled):
    scaled.N8N_CONCURRENCY = 1
    orders = [OrderFactory() for _ in range(6)]
    IntegrationSync.objects.filter(integration=n8n_integration, content_type__model="user").delete()
    for order in orders:
        order_services.order_change_status(order=order, status="confirmed")
    # The receiver takes 1.3 s per event while the first round runs, then recovers just before its lease ends.
    n8n_receiver.set_delay(1.3)
    with Workers(n8n_integration.pk):
        assert wait_until(
            lambda: IntegrationSync.objects.filter(integration=n8n_integration, status="in_progress").exists(), 5
        )
        time.sleep(LEASE - 0.1)
        n8n_receiver.set_delay(0)
        assert wait_until(lambda: nothing_open(n8n_integration), 20)
    for order in orders:
        arrived = [
            e.body["sequence"] for e in n8n_receiver.events if e.body["object"] == {"type": "order", "id": order.pk}
        ]
        assert arrived == sorted(arrived), f"order {order.pk}: events arrived as {arrived}"
    assert n8n_receiver.duplicates == 0


def test_a_lease_shorter_than_a_worst_case_call_is_refused_at_start():
    env = {**os.environ, "SYNC_LEASE_SECONDS": "60", "BITRIX_TIMEOUT": "5,65", "SECRET_KEY": "x"}
    result = subprocess.run(
        [sys.executable, "-c", "import app.settings"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SYNC_LEASE_SECONDS" in result.stderr and "BITRIX_TIMEOUT" in result.stderr
