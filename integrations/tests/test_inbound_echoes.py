"""Echoes of our own deal writes and the newer-side rule, through the real Bitrix target and the sandbox over HTTP:
a stage we sent (acknowledged or not) is ours; a Bitrix-side change never overwrites a newer local change."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from integrations import dispatcher
from integrations.inbound.processing import inbound_process
from integrations.models import ExternalLink, InboundStatus, IntegrationKind, IntegrationSync, SyncStatus
from integrations.sandbox.bitrix24 import store as sandbox_store
from integrations.tests.factories import IntegrationFactory
from integrations.tests.test_inbound_processing import (  # noqa: F401 - fixtures
    deal_event,
    link_order_to_deal,
    secrets,
    sent,
    status_changes,
)
from orders.models import Order
from orders.services import order_change_status
from orders.tests.factories import OrderFactory


def deal_link(bitrix, order) -> ExternalLink:
    return ExternalLink.objects.get(
        integration=bitrix, content_type=ContentType.objects.get_for_model(Order), object_id=str(order.pk)
    )


def process_event(client, deal_id, ts):
    row = deal_event(client, deal_id, ts=ts)
    inbound_process(inbound_id=row.pk)
    row.refresh_from_db()
    return row


@pytest.mark.django_db
@pytest.mark.usefixtures("sent")
def test_echo_of_a_stage_update_whose_response_was_lost_does_not_move_the_order_back(
    client, bitrix_sandbox, bitrix_integration
):
    n8n = IntegrationFactory(kind=IntegrationKind.N8N, name="n8n")
    order = OrderFactory()
    dispatcher.drain(integration_id=bitrix_integration.pk)
    link = deal_link(bitrix_integration, order)
    deal_id = int(link.remote_id)
    assert link.remote_state["STAGE_ID"] == "NEW"

    order_change_status(order=order, status="confirmed")
    bitrix_sandbox.fail_next(1, "lost_response")  # the portal applies PREPARATION, its answer never arrives
    dispatcher.drain(integration_id=bitrix_integration.pk)
    assert bitrix_sandbox.deals[deal_id]["STAGE_ID"] == "PREPARATION"
    state = deal_link(bitrix_integration, order).remote_state
    assert state["STAGE_ID"] == "NEW" and [s["stage"] for s in state["sent"]] == ["PREPARATION"]  # noted before
    assert IntegrationSync.objects.filter(integration=bitrix_integration, status=SyncStatus.RETRYING).exists()

    order = order_change_status(order=order, status="in_progress")  # through the API, before the retry
    changes_before = len(status_changes(n8n))
    echo = process_event(client, deal_id, ts="1700000001")  # the portal's event for our own PREPARATION

    order.refresh_from_db()
    assert echo.status == InboundStatus.IGNORED and echo.result["echo"] is True, echo.result
    assert order.status == "in_progress" and len(status_changes(n8n)) == changes_before
    order_change_status(order=order, status="done")  # the customer's next valid transition is accepted

    bitrix_sandbox.store.update("deal", deal_id, {"STAGE_ID": "LOSE"})  # a real change made in Bitrix24
    real = process_event(client, deal_id, ts="1700000002")
    order.refresh_from_db()
    assert (real.status, order.status) == (InboundStatus.PROCESSED, "cancelled")


@pytest.mark.django_db
@pytest.mark.usefixtures("sent")
def test_a_bitrix_change_older_than_the_orders_last_local_status_change_is_not_applied(
    client, bitrix_sandbox, monkeypatch
):
    order, deal_id, n8n = link_order_to_deal(bitrix_sandbox)
    earlier = (datetime.now(UTC) - timedelta(seconds=30)).astimezone().isoformat(timespec="seconds")
    monkeypatch.setattr(sandbox_store, "_now", lambda: earlier)
    bitrix_sandbox.store.update("deal", deal_id, {"STAGE_ID": "WON"})  # changed in Bitrix24 30 s ago…
    monkeypatch.undo()
    order_change_status(order=order, status="confirmed")  # …and here since: ours is newer
    row = process_event(client, deal_id, ts="1700000003")
    order.refresh_from_db()
    assert row.status == InboundStatus.IGNORED and "newer" in row.result["reason"], row.result
    assert order.status == "confirmed"


@pytest.mark.django_db
@pytest.mark.usefixtures("sent")
def test_a_stage_we_sent_long_ago_set_again_in_bitrix_is_a_real_change(client, bitrix_sandbox):
    order, deal_id, n8n = link_order_to_deal(bitrix_sandbox)
    long_ago = (timezone.now() - timedelta(minutes=10)).isoformat()
    ExternalLink.objects.filter(remote_id=str(deal_id)).update(
        remote_state={
            "STAGE_ID": "EXECUTING",
            "sent": [{"stage": "PREPARATION", "at": long_ago}, {"stage": "EXECUTING", "at": long_ago}],
        }
    )
    Order.objects.filter(pk=order.pk).update(status="in_progress")
    bitrix_sandbox.store.update("deal", deal_id, {"STAGE_ID": "PREPARATION"})  # someone moves the deal back, now
    row = process_event(client, deal_id, ts="1700000004")
    order.refresh_from_db()
    assert (row.status, order.status) == (InboundStatus.PROCESSED, "confirmed")
    assert status_changes(n8n)[-1] == {"status": ["in_progress", "confirmed"]}


@pytest.mark.django_db
def test_an_acknowledged_update_keeps_the_stages_sent_on_the_link(bitrix_sandbox, bitrix_integration):
    order = OrderFactory()
    dispatcher.drain(integration_id=bitrix_integration.pk)
    order = order_change_status(order=order, status="confirmed")
    dispatcher.drain(integration_id=bitrix_integration.pk)
    order_change_status(order=order, status="in_progress")
    dispatcher.drain(integration_id=bitrix_integration.pk)
    state = deal_link(bitrix_integration, order).remote_state
    assert state["STAGE_ID"] == "EXECUTING"
    assert [s["stage"] for s in state["sent"]] == ["PREPARATION", "EXECUTING"]
