"""Over real HTTP: the Bitrix24 sandbox posts events and robot calls to our live server; the bind command."""

import io
import time

import pytest
from django.core.management import CommandError, call_command

from integrations.models import (
    EventType,
    InboundStatus,
    InboundWebhook,
    Integration,
    IntegrationKind,
    IntegrationSync,
)
from integrations.sandbox.bitrix24 import BitrixSandbox, robot_call
from integrations.tests.test_inbound_processing import link_order_to_deal
from orders.models import Order

TOKEN = "robot-url-token-123"


@pytest.fixture
def sandbox(live_server, settings, monkeypatch):
    """Sandbox whose CRM events go to our live server; Celery runs process_inbound in-process (eager)."""
    from integrations.tasks import process_inbound

    box = BitrixSandbox(enforce_rate_limit=False, event_handler_url=f"{live_server.url}/bitrix/webhook").start()
    settings.BITRIX_APPLICATION_TOKEN = box.application_token
    settings.BITRIX_WEBHOOK_TOKEN = TOKEN
    monkeypatch.setattr(process_inbound, "apply_async", lambda args, **kw: process_inbound(*args))
    yield box
    box.stop()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def link_order_to_new_deal(box) -> tuple[Order, int, Integration]:
    linked = link_order_to_deal(box)
    assert box.wait_for_events()  # the deal's ONCRMDEALADD has been delivered
    return linked


@pytest.mark.django_db(transaction=True)
def test_stage_moved_in_bitrix_reaches_the_order_and_n8n_over_http(sandbox):
    order, deal_id, n8n = link_order_to_new_deal(sandbox)
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "EXECUTING"})
    assert sandbox.wait_for_events()
    assert wait_for(lambda: Order.objects.get(pk=order.pk).status == "in_progress")
    row = InboundWebhook.objects.get(event="ONCRMDEALUPDATE")
    assert (row.status, row.authenticated, row.remote_object) == ("processed", True, f"DEAL_{deal_id}")
    assert sandbox.application_token not in row.body
    assert IntegrationSync.objects.filter(integration=n8n, event_type=EventType.STATUS_CHANGED).count() == 1
    add = InboundWebhook.objects.get(event="ONCRMDEALADD")
    assert add.status == InboundStatus.IGNORED  # the deal existed before the link did


@pytest.mark.django_db(transaction=True)
def test_robot_webhook_with_quoted_test_param_arrives_and_is_stored_verbatim(sandbox, live_server):
    order, deal_id, _ = link_order_to_new_deal(sandbox)
    result = robot_call(f"{live_server.url}/bitrix/webhook?token={TOKEN}", f"DEAL_{deal_id}", 'test="test2"')
    assert result.status == 200, result.body
    row = InboundWebhook.objects.get(event="ROBOT")
    assert row.query == {"token": "***", "test": '"test2"'}
    assert row.remote_object == f"DEAL_{deal_id}" and row.status == InboundStatus.IGNORED  # same stage: an echo
    assert row.result["echo"] is True


@pytest.mark.django_db(transaction=True)
def test_robot_without_the_url_secret_is_rejected_and_not_processed(sandbox, live_server):
    result = robot_call(f"{live_server.url}/bitrix/webhook", "DEAL_1", 'test="test2"')
    assert result.status == 401
    row = InboundWebhook.objects.get()
    assert (row.status, row.authenticated, row.query) == ("rejected", False, {"test": '"test2"'})


@pytest.mark.django_db
def test_bind_command_binds_lists_and_unbinds_without_printing_the_webhook_code(settings):
    box = BitrixSandbox(enforce_rate_limit=False).start()
    try:
        Integration.objects.create(kind=IntegrationKind.BITRIX24, name="bitrix", endpoint=box.webhook_url)
        handler = "https://shop.example.com/bitrix/webhook?token=url-secret-999"
        out = io.StringIO()
        call_command("bitrix_bind_events", handler_url=handler, stdout=out)
        assert {b["event"] for b in box.registry.describe()} == {
            "ONCRMDEALUPDATE",
            "ONCRMDEALADD",
            "ONCRMDEALDELETE",
            "ONCRMCONTACTUPDATE",
        }
        call_command("bitrix_bind_events", handler_url=handler, stdout=out)  # again: already bound, no error
        call_command("bitrix_bind_events", list=True, stdout=out)
        call_command("bitrix_bind_events", handler_url=handler, unbind=True, stdout=out)
        assert box.registry.describe() == []
        text = out.getvalue()
        assert "already bound" in text and "4 binding(s)" in text
        assert box.code not in text and "url-secret-999" not in text
    finally:
        box.stop()


@pytest.mark.django_db
def test_bind_command_requires_a_handler_url_and_a_portal(settings):
    settings.BITRIX_WEBHOOK_URL = ""
    with pytest.raises(CommandError, match="BITRIX_WEBHOOK_URL"):
        call_command("bitrix_bind_events", handler_url="https://x/bitrix/webhook")
    settings.BITRIX_WEBHOOK_URL = "http://127.0.0.1:9/rest/1/abc/"
    with pytest.raises(CommandError, match="--handler-url"):
        call_command("bitrix_bind_events")
