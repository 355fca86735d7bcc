"""Reconciliation against the Bitrix24 sandbox: duplicate deals (found, fixed on request only) and drift (re-synced)."""

import logging

import pytest

from integrations import dispatcher
from integrations.clients.bitrix24 import BitrixClient
from integrations.models import EventType, ExternalLink, IntegrationSync, SyncStatus
from integrations.reconcile import find_drift, find_duplicates, fix_duplicates, reconcile_all
from integrations.tests.support import drain_all
from orders.tests.factories import OrderFactory

pytestmark = pytest.mark.django_db


def plant_deal(sandbox, order, *, origin: bool = True, title: str | None = None) -> str:
    fields = {"TITLE": title or f"Order #{order.pk}", "STAGE_ID": "NEW"}
    if origin:
        fields |= {"ORIGINATOR_ID": "django-orders", "ORIGIN_ID": str(order.pk)}
    response = BitrixClient(sandbox.webhook_url).call("crm.deal.add", {"fields": fields})
    assert response.ok, response
    return str(response.result)


def linked_deal(integration, order) -> str:
    return ExternalLink.objects.get(
        integration=integration, content_type__model="order", object_id=str(order.pk)
    ).remote_id


@pytest.fixture
def synced_order(bitrix_sandbox, bitrix_integration):
    order = OrderFactory()
    drain_all()
    return order


def test_duplicates_found_with_linked_deal_kept(bitrix_sandbox, bitrix_integration, synced_order):
    other = OrderFactory()
    drain_all()
    linked = linked_deal(bitrix_integration, synced_order)
    same_origin = plant_deal(bitrix_sandbox, synced_order)
    title_only = plant_deal(bitrix_sandbox, synced_order, origin=False)
    [group] = find_duplicates(bitrix_integration)
    assert group["order_id"] == str(synced_order.pk)
    assert group["deal_ids"] == sorted([linked, same_origin, title_only], key=int)
    assert group["linked_id"] == linked and group["keep"] == linked
    assert sorted(group["extra"]) == sorted([same_origin, title_only])
    assert find_duplicates(bitrix_integration, order_id=other.pk) == []
    assert len(find_duplicates(bitrix_integration, order_id=synced_order.pk)) == 1


def test_title_prefix_of_another_order_is_not_a_duplicate(bitrix_sandbox, bitrix_integration, synced_order):
    plant_deal(bitrix_sandbox, synced_order, origin=False, title=f"Order #{synced_order.pk}0")
    plant_deal(bitrix_sandbox, synced_order, origin=False, title=f"Re: Order #{synced_order.pk}")
    assert find_duplicates(bitrix_integration, order_id=synced_order.pk) == []


def test_fix_deletes_only_the_extra_deals(bitrix_sandbox, bitrix_integration, synced_order):
    linked = linked_deal(bitrix_integration, synced_order)
    extra = plant_deal(bitrix_sandbox, synced_order)
    done = fix_duplicates(find_duplicates(bitrix_integration))
    assert [(r["deal_id"], r["action"]) for r in done] == [(extra, "deleted")]
    assert [i for i, d in bitrix_sandbox.deals.items() if d.get("ORIGIN_ID") == str(synced_order.pk)] == [int(linked)]
    assert int(linked) in bitrix_sandbox.deals and int(extra) not in bitrix_sandbox.deals
    assert find_duplicates(bitrix_integration) == []


def test_without_link_the_lowest_deal_is_kept_and_linked(bitrix_sandbox, bitrix_integration, synced_order):
    first = linked_deal(bitrix_integration, synced_order)
    ExternalLink.objects.filter(object_id=str(synced_order.pk), content_type__model="order").delete()
    second = plant_deal(bitrix_sandbox, synced_order)
    [group] = find_duplicates(bitrix_integration)
    assert group["linked_id"] is None and group["keep"] == first and group["extra"] == [second]
    fix_duplicates([group])
    assert linked_deal(bitrix_integration, synced_order) == first
    assert int(first) in bitrix_sandbox.deals and int(second) not in bitrix_sandbox.deals


def test_deal_linked_to_another_order_is_never_deleted(bitrix_sandbox, bitrix_integration, synced_order):
    other = OrderFactory()
    drain_all()
    # A deal titled like synced_order's, but it is the one linked to `other`: it must survive --fix.
    foreign = linked_deal(bitrix_integration, other)
    BitrixClient(bitrix_sandbox.webhook_url).call(
        "crm.deal.update", {"id": foreign, "fields": {"TITLE": f"Order #{synced_order.pk}", "ORIGINATOR_ID": ""}}
    )
    [group] = find_duplicates(bitrix_integration, order_id=synced_order.pk)
    assert group["extra"] == [] and group["linked_elsewhere"] == [foreign]
    fix_duplicates([group])
    assert int(foreign) in bitrix_sandbox.deals


def test_reconcile_all_reports_duplicates_but_deletes_nothing(bitrix_sandbox, bitrix_integration, synced_order, caplog):
    extra = plant_deal(bitrix_sandbox, synced_order)
    before = set(bitrix_sandbox.deals)
    with caplog.at_level(logging.INFO, logger="integrations.worker"):
        counts = reconcile_all()
    assert counts["duplicate_groups"] == 1 and counts["extra_deals"] == 1
    assert set(bitrix_sandbox.deals) == before
    assert any("[WORKER]" in r.message and extra in r.message for r in caplog.records)
    assert bitrix_sandbox.code not in caplog.text


def test_drift_is_found_and_resynced(bitrix_sandbox, bitrix_integration, synced_order, n8n_integration):
    # n8n_integration exists from here on: a drift repair is Bitrix24's business, n8n hears of no "update".
    deal_id = linked_deal(bitrix_integration, synced_order)
    response = BitrixClient(bitrix_sandbox.webhook_url).call(
        "crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "WON", "OPPORTUNITY": "1.00"}}
    )
    assert response.ok
    [item] = find_drift(bitrix_integration)
    assert item["kind"] == "changed" and item["deal_id"] == deal_id
    assert set(item["fields"]) == {"STAGE_ID", "OPPORTUNITY"}

    counts = reconcile_all()
    assert counts["drifted"] == 1 and counts["resynced"] == 1
    row = IntegrationSync.objects.filter(integration=bitrix_integration, object_id=str(synced_order.pk)).first()
    assert row.event_type == EventType.UPDATED and row.status == SyncStatus.PENDING and row.changes == {}
    assert not IntegrationSync.objects.filter(integration=n8n_integration).exists()
    assert find_drift(bitrix_integration) == []  # an open sync: its state is on its way, not drift

    dispatcher.drain(max_seconds=20)
    row.refresh_from_db()
    assert row.status == SyncStatus.SYNCED
    deal = bitrix_sandbox.deals[int(deal_id)]
    assert deal["STAGE_ID"] == "NEW" and float(deal["OPPORTUNITY"]) == float(synced_order.amount)
    assert find_drift(bitrix_integration) == []
    assert reconcile_all()["resynced"] == 0


def test_missing_deal_is_reported_not_recreated(bitrix_sandbox, bitrix_integration, synced_order):
    deal_id = linked_deal(bitrix_integration, synced_order)
    assert BitrixClient(bitrix_sandbox.webhook_url).call("crm.deal.delete", {"id": deal_id}).ok
    [item] = find_drift(bitrix_integration)
    assert item["kind"] == "missing"
    before = IntegrationSync.objects.count()
    counts = reconcile_all()
    assert counts["missing"] == 1 and counts["resynced"] == 0
    assert IntegrationSync.objects.count() == before


def test_failed_listing_changes_nothing(bitrix_sandbox, bitrix_integration, synced_order):
    deal_id = linked_deal(bitrix_integration, synced_order)
    BitrixClient(bitrix_sandbox.webhook_url).call("crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "WON"}})
    plant_deal(bitrix_sandbox, synced_order)
    before = IntegrationSync.objects.count()
    bitrix_sandbox.fail_next(1, "error_5xx")
    counts = reconcile_all()
    assert counts["errors"] == 1 and counts["resynced"] == 0
    assert IntegrationSync.objects.count() == before


def test_disabled_integration_is_not_reconciled(bitrix_sandbox, bitrix_integration, synced_order):
    plant_deal(bitrix_sandbox, synced_order)
    bitrix_integration.enabled = False
    bitrix_integration.save()
    assert reconcile_all()["integrations"] == 0
