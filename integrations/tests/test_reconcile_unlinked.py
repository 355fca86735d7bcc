"""reconcile_all() converges objects without a Bitrix24 link: dead creates revived, missing creates queued, failed
ones reported, open ones left alone; against the sandbox on PostgreSQL."""

import logging
from decimal import Decimal

import pytest
from django.utils import timezone

from integrations import services, unlinked
from integrations.clients.bitrix24 import BitrixClient
from integrations.clients.http import HttpResult
from integrations.models import EventType, ExternalLink, IntegrationSync, SyncStatus
from integrations.policy import Verdict
from integrations.reconcile import reconcile_all
from integrations.targets.base import Outcome
from integrations.tests.support import drain_all
from orders.models import Order
from orders.tests.factories import OrderFactory
from users.models import User
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def deals_for(sandbox, order) -> list[dict]:
    return [d for d in sandbox.deals.values() if str(d.get("ORIGIN_ID")) == str(order.pk)]


def created_rows(integration, obj):
    return IntegrationSync.objects.filter(
        integration=integration,
        content_type__model=obj._meta.model_name,
        object_id=str(obj.pk),
        event_type=EventType.CREATED,
    )


def is_linked(integration, obj) -> bool:
    return ExternalLink.objects.filter(
        integration=integration, content_type__model=obj._meta.model_name, object_id=str(obj.pk)
    ).exists()


@pytest.fixture
def customer(bitrix_sandbox, bitrix_integration):
    """A customer whose contact exists, so an order's deal does not wait for it."""
    user = UserFactory()
    drain_all()
    assert is_linked(bitrix_integration, user)
    return user


@pytest.fixture
def dead_order(bitrix_sandbox, bitrix_integration, customer, settings):
    """An order whose create ran out of attempts on 5xx answers, for real: no deal, no link, row dead."""
    settings.SYNC_MAX_ATTEMPTS = 1
    bitrix_sandbox.set_faults(error_5xx=1.0)
    order = OrderFactory(user=customer)
    drain_all()
    bitrix_sandbox.set_faults()
    [row] = created_rows(bitrix_integration, order)
    assert row.status == SyncStatus.DEAD and deals_for(bitrix_sandbox, order) == []
    settings.SYNC_MAX_ATTEMPTS = 20
    return order


def bulk_orders(user, n: int) -> list[Order]:
    """Orders written past the signals: no sync row at all."""
    return Order.objects.bulk_create(
        [Order(user=user, title=f"bulk {i}", amount=Decimal("10.00"), currency="USD") for i in range(n)]
    )


def test_dead_create_is_revived_with_the_same_event_id_and_gets_one_deal(
    bitrix_sandbox, bitrix_integration, dead_order
):
    [row] = created_rows(bitrix_integration, dead_order)
    counts = reconcile_all()
    assert counts["revived"] == 1 and counts["requeued"] == 0 and counts["unlinked_failed"] == 0
    drain_all()
    [deal] = deals_for(bitrix_sandbox, dead_order)
    [after] = created_rows(bitrix_integration, dead_order)
    assert after.pk == row.pk and after.event_id == row.event_id and after.status == SyncStatus.SYNCED
    assert ExternalLink.objects.get(object_id=str(dead_order.pk), content_type__model="order").remote_id == str(
        deal["ID"]
    )


def test_failed_create_is_reported_not_retried(bitrix_sandbox, bitrix_integration, customer, caplog):
    order = OrderFactory(user=customer)
    [claimed] = services.sync_claim_due(integration=bitrix_integration, limit=10)
    rejected = Outcome(verdict=Verdict.TERMINAL, http=HttpResult(status=400), error="400 INVALID_ARG_VALUE: bad field")
    services.sync_complete(claimed=claimed, outcome=rejected, started_at=timezone.now())
    [row] = created_rows(bitrix_integration, order)
    assert row.status == SyncStatus.FAILED

    with caplog.at_level(logging.INFO, logger="integrations.worker"):
        counts = reconcile_all()
    assert counts["unlinked_failed"] == 1 and counts["revived"] == 0 and counts["requeued"] == 0
    [line] = [r for r in caplog.records if r.levelno == logging.WARNING and f"sync={row.pk}" in r.getMessage()]
    assert line.getMessage().startswith("[WORKER] reconcile") and "INVALID_ARG_VALUE" in line.getMessage()
    assert bitrix_sandbox.code not in caplog.text
    drain_all()
    row.refresh_from_db()
    assert row.status == SyncStatus.FAILED and row.attempts == 1
    assert deals_for(bitrix_sandbox, order) == []


def test_objects_written_past_the_signals_get_their_contact_and_deal(bitrix_sandbox, bitrix_integration):
    [user] = User.objects.bulk_create([User(username="bulk", email="bulk@example.com", first_name="Bo", last_name="B")])
    User.objects.bulk_create([User(username="staff", email="staff@example.com", is_staff=True)])
    [order] = bulk_orders(user, 1)
    counts = reconcile_all()
    assert counts["requeued"] == 2 and counts["revived"] == 0
    assert not IntegrationSync.objects.filter(object_id__in=[str(u.pk) for u in User.objects.filter(is_staff=True)])
    drain_all()
    [deal] = deals_for(bitrix_sandbox, order)
    [contact] = [c for c in bitrix_sandbox.contacts.values() if str(c.get("ORIGIN_ID")) == str(user.pk)]
    assert [str(c) for c in deal["CONTACT_IDS"]] == [str(contact["ID"])]
    assert is_linked(bitrix_integration, order) and is_linked(bitrix_integration, user)


def test_requeued_creates_go_to_bitrix_only_not_to_an_n8n_integration_added_since(
    bitrix_sandbox, bitrix_integration, n8n_integration
):
    [user] = User.objects.bulk_create([User(username="old", email="old@example.com", first_name="O", last_name="D")])
    [order] = bulk_orders(user, 1)
    assert reconcile_all()["requeued"] == 2
    assert created_rows(bitrix_integration, order).count() == 1 and created_rows(bitrix_integration, user).count() == 1
    assert not IntegrationSync.objects.filter(integration=n8n_integration).exists()


def test_an_order_waiting_for_its_contact_queues_the_contact_for_bitrix_only(
    bitrix_sandbox, bitrix_integration, n8n_integration
):
    [user] = User.objects.bulk_create([User(username="late", email="late@example.com", first_name="L", last_name="T")])
    order = OrderFactory(user=user)  # its deal needs the contact, which was never queued
    drain_all()
    assert created_rows(bitrix_integration, user).count() == 1
    assert not created_rows(n8n_integration, user).exists()
    assert is_linked(bitrix_integration, order) and len(deals_for(bitrix_sandbox, order)) == 1


def test_running_twice_adds_no_second_create_or_deal(bitrix_sandbox, bitrix_integration, customer, dead_order):
    [fresh] = bulk_orders(customer, 1)
    first = reconcile_all()
    second = reconcile_all()
    assert (first["revived"], first["requeued"]) == (1, 1)
    assert (second["revived"], second["requeued"]) == (0, 0)
    drain_all()
    third = reconcile_all()
    assert (third["revived"], third["requeued"], third["unlinked_failed"]) == (0, 0, 0)
    drain_all()
    for order in (fresh, dead_order):
        assert created_rows(bitrix_integration, order).count() == 1
        assert len(deals_for(bitrix_sandbox, order)) == 1


def test_objects_with_an_open_row_are_left_alone(bitrix_sandbox, bitrix_integration, customer, dead_order):
    pending = OrderFactory(user=customer)
    dead_order.comment = "changed"
    dead_order.save()  # an open update of an unlinked order creates the deal itself
    before = {r.pk: (r.status, r.attempts, r.updated_at) for r in IntegrationSync.objects.all()}
    counts = reconcile_all()
    assert (counts["revived"], counts["requeued"], counts["unlinked_failed"]) == (0, 0, 0)
    assert {r.pk: (r.status, r.attempts, r.updated_at) for r in IntegrationSync.objects.all()} == before
    drain_all()
    assert len(deals_for(bitrix_sandbox, pending)) == 1 and len(deals_for(bitrix_sandbox, dead_order)) == 1
    assert created_rows(bitrix_integration, dead_order).get().status == SyncStatus.DEAD  # linked now: nothing to do
    assert reconcile_all()["revived"] == 0


def test_each_run_handles_at_most_the_cap(bitrix_sandbox, bitrix_integration, customer, monkeypatch, caplog):
    monkeypatch.setattr(unlinked, "MAX_PER_RUN", 2)
    orders = bulk_orders(customer, 5)
    with caplog.at_level(logging.INFO, logger="integrations.worker"):
        runs = [reconcile_all() for _ in range(4)]
    assert [(r["requeued"], r["unlinked_left"]) for r in runs] == [(2, 3), (2, 1), (1, 0), (0, 0)]
    assert "3 unlinked orders left for the next run" in caplog.text
    drain_all()
    for order in orders:
        assert created_rows(bitrix_integration, order).count() == 1 and len(deals_for(bitrix_sandbox, order)) == 1


def test_a_failing_part_does_not_stop_the_other(bitrix_sandbox, bitrix_integration, customer, monkeypatch):
    [order] = bulk_orders(customer, 1)
    bitrix_sandbox.fail_next(1, "error_5xx")  # the duplicates listing fails
    counts = reconcile_all()
    assert counts["errors"] == 1 and counts["requeued"] == 1

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("integrations.reconcile.requeue_unlinked", broken)
    drain_all()
    deal_id = str(deals_for(bitrix_sandbox, order)[0]["ID"])
    assert (
        BitrixClient(bitrix_sandbox.webhook_url)
        .call("crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "WON"}})
        .ok
    )
    counts = reconcile_all()
    assert counts["unlinked_errors"] == 1 and counts["drifted"] == 1 and counts["resynced"] == 1
