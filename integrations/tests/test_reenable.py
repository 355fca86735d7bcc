"""Enabling an integration again: Bitrix24 (state sync) receives the latest state of everything it missed; n8n (event
stream) replays nothing unless an operator asks (`sync_retry --skipped`). Real PostgreSQL, sandboxes over real HTTP."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from integrations import dispatcher
from integrations.missed import requeue_missed
from integrations.models import Integration, IntegrationSync, SyncStatus
from integrations.reconcile import reconcile_all
from integrations.tests.support import drain_all
from orders import services as order_services
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def deals_for(sandbox, order) -> list[dict]:
    return [d for d in sandbox.deals.values() if str(d.get("ORIGIN_ID")) == str(order.pk)]


def disable(integration, reason="maintenance"):
    Integration.objects.filter(pk=integration.pk).update(enabled=False, disabled_reason=reason)
    integration.refresh_from_db()


def admin_enable(admin_client, integration):
    """What an operator does: tick "enabled" on the integration's admin page and save."""
    data = {
        "kind": integration.kind,
        "name": integration.name,
        "enabled": "on",
        "endpoint": "",
        "secret": "",
        "event_filter": json.dumps(integration.event_filter),
        "rate_limit": integration.rate_limit,
        "disabled_reason": integration.disabled_reason,
    }
    response = admin_client.post(f"/admin/integrations/integration/{integration.pk}/change/", data, follow=True)
    assert response.status_code == 200
    integration.refresh_from_db()
    assert integration.enabled
    return response


def test_a_reenabled_bitrix_integration_receives_the_latest_state_of_what_it_missed(
    bitrix_sandbox, bitrix_integration, admin_client
):
    synced = OrderFactory()
    pending = OrderFactory(user=synced.user)
    drain_all()
    order_services.order_change_status(order=pending, status="confirmed")  # pending when the integration goes off
    disable(bitrix_integration)
    dispatcher.drain(max_seconds=5)  # the pending row is released as skipped
    order_services.order_change_status(order=synced, status="confirmed")  # recorded skipped
    order_services.order_change_status(order=synced, status="in_progress")
    created_meanwhile = OrderFactory()  # a new customer and order: skipped creates
    statuses = set(IntegrationSync.objects.filter(integration=bitrix_integration).values_list("status", flat=True))
    assert SyncStatus.SKIPPED in statuses and SyncStatus.PENDING not in statuses

    response = admin_enable(admin_client, bitrix_integration)
    assert "enabled: latest state queued" in response.content.decode()
    drain_all()

    [deal] = deals_for(bitrix_sandbox, synced)
    assert deal["STAGE_ID"] == "EXECUTING"
    [deal] = deals_for(bitrix_sandbox, pending)
    assert deal["STAGE_ID"] == "PREPARATION"
    [deal] = deals_for(bitrix_sandbox, created_meanwhile)
    [contact] = [c for c in bitrix_sandbox.contacts.values() if str(c["ORIGIN_ID"]) == str(created_meanwhile.user_id)]
    assert [str(c) for c in deal["CONTACT_IDS"]] == [str(contact["ID"])]
    assert bitrix_integration.disabled_reason == ""
    assert requeue_missed(integration=bitrix_integration)["missed_requeued"] == 0  # nothing left behind


def test_a_linked_order_deleted_while_disabled_has_its_deal_cancelled_after_reenable(
    bitrix_sandbox, bitrix_integration, admin_client
):
    order = OrderFactory()
    drain_all()
    [deal] = deals_for(bitrix_sandbox, order)
    disable(bitrix_integration)
    order_services.order_delete(order=order)
    admin_enable(admin_client, bitrix_integration)
    drain_all()
    deal = bitrix_sandbox.deals[int(deal["ID"])]
    assert deal["STAGE_ID"] == "LOSE"


def test_the_hourly_reconcile_queues_what_a_reenable_left_behind(bitrix_sandbox, bitrix_integration):
    """E.g. a round that read the integration as disabled released its rows as skipped after the re-enable."""
    order = OrderFactory()
    drain_all()
    disable(bitrix_integration)
    order_services.order_change_status(order=order, status="confirmed")
    Integration.objects.filter(pk=bitrix_integration.pk).update(enabled=True)  # enabled past the admin
    counts = reconcile_all()
    assert counts["missed_requeued"] == 1
    drain_all()
    assert deals_for(bitrix_sandbox, order)[0]["STAGE_ID"] == "PREPARATION"
    assert reconcile_all()["missed_requeued"] == 0


def test_a_reenabled_n8n_integration_replays_skipped_events_only_when_asked(
    n8n_receiver, n8n_integration, admin_client
):
    user = UserFactory()
    drain_all()
    disable(n8n_integration, reason="n8n answered 410 Gone")
    order = OrderFactory(user=user)
    order_services.order_change_status(order=order, status="confirmed")
    response = admin_enable(admin_client, n8n_integration)
    assert "sync_retry --skipped" in response.content.decode()
    drain_all()
    assert [e.body["type"] for e in n8n_receiver.events] == ["user.created"]

    call_command("sync_retry", "--skipped", "--integration", n8n_integration.name)
    drain_all()
    types = [e.body["type"] for e in n8n_receiver.events_for("order", order.pk)]
    assert types == ["order.created", "order.status_changed"]


def test_sync_retry_does_not_touch_skipped_rows_without_the_flag(n8n_receiver, n8n_integration):
    disable(n8n_integration)
    OrderFactory()
    Integration.objects.filter(pk=n8n_integration.pk).update(enabled=True)
    call_command("sync_retry", "--integration", n8n_integration.name)
    drain_all()
    assert n8n_receiver.events == []


def test_the_sync_enable_command_enables_and_catches_bitrix_up(bitrix_sandbox, bitrix_integration):
    out = StringIO()
    call_command("sync_enable", bitrix_integration.name, "--disable", "--reason", "portal migration", stdout=out)
    order = OrderFactory()
    call_command("sync_enable", bitrix_integration.name, stdout=out)
    call_command("sync_enable", bitrix_integration.name, stdout=out)
    text = out.getvalue()
    assert "disabled: portal migration" in text and "latest state queued for 2 objects" in text
    assert "is enabled already" in text
    drain_all()
    assert len(deals_for(bitrix_sandbox, order)) == 1
