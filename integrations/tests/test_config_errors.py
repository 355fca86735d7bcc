"""A typo in an integration's configuration: refused where it is entered; found at delivery, it pauses the integration
with the reason and ends nothing (rows stay due, outcomes already obtained are kept). Real PostgreSQL, sandboxes over
real HTTP."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from integrations import dispatcher, targets
from integrations.config import ConfigurationError
from integrations.inbound.processing import inbound_process
from integrations.models import (
    ExternalLink,
    InboundStatus,
    InboundWebhook,
    Integration,
    IntegrationKind,
    IntegrationSync,
    SyncStatus,
)
from integrations.targets.bitrix24 import BitrixTarget
from integrations.targets.bitrix_limits import bitrix_client_for
from integrations.tests.support import drain_all
from orders.tests.factories import OrderFactory

pytestmark = pytest.mark.django_db
TOO_SHORT_SECRET = "whsec_dGVzdA"  # base64 of "test": 4 bytes, not a signing key


def admin_add(admin_client, **fields):
    data = {"kind": "bitrix24", "name": "typo", "enabled": "on", "event_filter": "[]", "rate_limit": ""}
    data.update(fields)
    return admin_client.post("/admin/integrations/integration/add/", data)


# -- refused where it is entered ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"endpoint": "https://p.example/rest/1/abc123/", "rate_limit": "2"}, "requests per second"),
        ({"endpoint": "https://p.example/rest/1/abc123/", "rate_limit": "nan/50"}, "requests per second"),
        ({"kind": "n8n", "endpoint": "https://n8n.example/webhook/shop", "secret": TOO_SHORT_SECRET}, "24-64 bytes"),
        ({"kind": "n8n", "endpoint": "https://n8n.example/webhook/shop", "secret": "whsec_!!"}, "base64"),
        ({"endpoint": "p.example/rest/1/abc123/"}, "http(s) URL"),
        ({"endpoint": "https://p.example/crm/"}, "inbound webhook URL"),
    ],
)
def test_the_admin_form_refuses_a_typo_with_a_clear_message(admin_client, fields, message):
    response = admin_add(admin_client, **fields)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Integration.objects.filter(name="typo").exists()
    assert TOO_SHORT_SECRET not in response.content.decode()


def test_the_admin_form_accepts_a_valid_configuration(admin_client):
    response = admin_add(admin_client, endpoint="https://p.example/rest/1/abc123/", rate_limit="2/50")
    assert response.status_code == 302
    assert Integration.objects.get(name="typo").rate_limit == "2/50"


def test_the_model_clean_is_the_shared_validator():
    integration = Integration(kind=IntegrationKind.N8N, name="x", endpoint="https://n8n.example/h", secret="whsec_x")
    with pytest.raises(Exception) as caught:
        integration.full_clean()
    assert "secret" in caught.value.message_dict


def test_bootstrap_refuses_an_invalid_rate_limit_and_writes_nothing(settings):
    settings.BITRIX_WEBHOOK_URL = "https://p.example/rest/1/abc123/"
    settings.BITRIX_ENABLED = True
    settings.BITRIX_RATE_LIMIT = "2"
    with pytest.raises(CommandError, match="BITRIX_RATE_LIMIT.*requests per second"):
        call_command("sync_bootstrap")
    assert not Integration.objects.exists()


def test_bootstrap_refuses_an_invalid_n8n_secret_without_quoting_it(settings):
    settings.N8N_WEBHOOK_URL = "https://n8n.example/webhook/shop"
    settings.N8N_ENABLED = True
    settings.N8N_WEBHOOK_SECRET = TOO_SHORT_SECRET
    with pytest.raises(CommandError) as caught:
        call_command("sync_bootstrap")
    assert "N8N_WEBHOOK_SECRET" in str(caught.value) and TOO_SHORT_SECRET not in str(caught.value)
    assert not Integration.objects.exists()


# -- found at delivery ---------------------------------------------------------------------------------------------


def assert_paused_with_reason(integration, text):
    integration.refresh_from_db()
    assert integration.enabled
    assert integration.paused_until and integration.paused_until > timezone.now()
    assert "configuration error" in integration.disabled_reason and text in integration.disabled_reason


def test_a_rate_limit_typo_pauses_bitrix_keeps_rows_due_and_a_fix_delivers(
    bitrix_sandbox, bitrix_integration, admin_client
):
    Integration.objects.filter(pk=bitrix_integration.pk).update(rate_limit="2")  # e.g. written before validation
    orders = [OrderFactory() for _ in range(3)]
    dispatcher.drain(max_seconds=5)
    rows = IntegrationSync.objects.filter(integration=bitrix_integration)
    assert set(rows.values_list("status", flat=True)) == {SyncStatus.PENDING}
    assert set(rows.values_list("attempts", flat=True)) == {0}
    assert_paused_with_reason(bitrix_integration, "rate limit")
    assert [r for r in bitrix_sandbox.requests if not str(r.get("method")).startswith("sandbox")] == []

    fix = {"kind": "bitrix24", "name": bitrix_integration.name, "enabled": "on", "event_filter": "[]"}
    fix.update(rate_limit="2/50", disabled_reason=bitrix_integration.disabled_reason)
    response = admin_client.post(f"/admin/integrations/integration/{bitrix_integration.pk}/change/", fix)
    assert response.status_code == 302  # the operator fixes the typo in the admin: the pause is lifted at once
    bitrix_integration.refresh_from_db()
    assert bitrix_integration.paused_until is None and bitrix_integration.disabled_reason == ""
    drain_all()
    for order in orders:
        assert len([d for d in bitrix_sandbox.deals.values() if str(d["ORIGIN_ID"]) == str(order.pk)]) == 1


def test_an_n8n_secret_typo_pauses_n8n_keeps_rows_due_and_a_fix_delivers(n8n_receiver, n8n_integration):
    Integration.objects.filter(pk=n8n_integration.pk).update(secret=TOO_SHORT_SECRET)
    OrderFactory()
    dispatcher.drain(max_seconds=5)
    rows = IntegrationSync.objects.filter(integration=n8n_integration)
    assert rows.count() == 2
    assert set(rows.values_list("status", flat=True)) == {SyncStatus.PENDING}
    assert set(rows.values_list("attempts", flat=True)) == {0}
    assert_paused_with_reason(n8n_integration, "24-64 bytes")
    assert TOO_SHORT_SECRET not in n8n_integration.disabled_reason
    assert n8n_receiver.requests == []

    # Fixed past the admin (shell, database) and the pause over: the next round finds it fine and says so.
    Integration.objects.filter(pk=n8n_integration.pk).update(secret=n8n_receiver.secrets[0], paused_until=None)
    drain_all()
    assert set(rows.values_list("status", flat=True)) == {SyncStatus.SYNCED}
    n8n_integration.refresh_from_db()
    assert n8n_integration.disabled_reason == ""


class DealPhaseBreaks(BitrixTarget):
    """A Bitrix24 target whose client meets a configuration error on its first deal batch (after the contacts)."""

    def __init__(self):
        super().__init__(client_factory=self._client)

    @staticmethod
    def _client(integration):
        client = bitrix_client_for(integration)
        real_batch = client.batch

        def batch(commands, halt=False):
            if any(method.startswith("crm.deal") for method, _ in commands.values()):
                raise ConfigurationError("rate limit must look like '<requests per second>/<burst>'")
            return real_batch(commands, halt=halt)

        client.batch = batch
        return client


def test_a_configuration_error_mid_round_keeps_the_outcomes_already_obtained(bitrix_sandbox, bitrix_integration):
    previous = targets.target_for(IntegrationKind.BITRIX24)
    targets.register(IntegrationKind.BITRIX24, DealPhaseBreaks())
    try:
        order = OrderFactory()
        dispatcher.dispatch_once(bitrix_integration.pk)
    finally:
        targets.register(IntegrationKind.BITRIX24, previous)
    user_row = IntegrationSync.objects.get(integration=bitrix_integration, content_type__model="user")
    order_row = IntegrationSync.objects.get(integration=bitrix_integration, content_type__model="order")
    assert user_row.status == SyncStatus.SYNCED  # the contact created before the error is kept, with its link
    assert ExternalLink.objects.filter(integration=bitrix_integration, content_type__model="user").exists()
    assert order_row.status == SyncStatus.PENDING and order_row.attempts == 0
    assert_paused_with_reason(bitrix_integration, "rate limit")

    Integration.objects.filter(pk=bitrix_integration.pk).update(paused_until=None)
    drain_all()
    assert len([c for c in bitrix_sandbox.contacts.values() if str(c["ORIGIN_ID"]) == str(order.user_id)]) == 1
    assert len([d for d in bitrix_sandbox.deals.values() if str(d["ORIGIN_ID"]) == str(order.pk)]) == 1


def test_an_inbound_call_meeting_a_configuration_error_is_recorded_not_rolled_back(
    bitrix_sandbox, bitrix_integration, client, settings
):
    settings.BITRIX_APPLICATION_TOKEN = "app-token-for-tests-0001"
    Integration.objects.filter(pk=bitrix_integration.pk).update(rate_limit="2")
    order = OrderFactory()
    deal_id = bitrix_sandbox.store.add("deal", {"TITLE": f"Order #{order.pk}", "STAGE_ID": "WON"})
    ExternalLink.objects.create(
        integration=bitrix_integration, content_type_id=order_ct(), object_id=str(order.pk), remote_id=str(deal_id)
    )
    contact_call = InboundWebhook.objects.create(
        method="POST", path="/bitrix/webhook", event="ONCRMCONTACTUPDATE", remote_object="CONTACT_1"
    )
    deal_call = InboundWebhook.objects.create(
        method="POST", path="/bitrix/webhook", event="ONCRMDEALUPDATE", remote_object=f"DEAL_{deal_id}"
    )
    inbound_process(inbound_id=deal_call.pk)
    deal_call.refresh_from_db()
    contact_call.refresh_from_db()
    assert contact_call.status == InboundStatus.IGNORED  # the batch was not rolled back
    assert deal_call.status == InboundStatus.FAILED and deal_call.result["retryable"] is True
    assert deal_call.result["attempts"] == 0  # a configuration error burns no attempt
    assert "configuration error" in deal_call.error
    assert_paused_with_reason(bitrix_integration, "rate limit")


def order_ct() -> int:
    from django.contrib.contenttypes.models import ContentType

    from orders.models import Order

    return ContentType.objects.get_for_model(Order).pk


def test_bitrix_check_names_a_configuration_error_instead_of_a_traceback(bitrix_sandbox, bitrix_integration):
    Integration.objects.filter(pk=bitrix_integration.pk).update(rate_limit="2")
    with pytest.raises(CommandError, match="configuration error: rate limit must be"):
        call_command("bitrix_check", stdout=StringIO())


def test_an_n8n_integration_added_without_a_secret_gets_one_shown_once(admin_client):
    response = admin_client.post(
        "/admin/integrations/integration/add/",
        {"kind": "n8n", "name": "flows", "enabled": "on", "event_filter": "[]", "endpoint": "https://n8n.example/h"},
        follow=True,
    )
    secret = Integration.objects.get(name="flows").secret
    assert secret.startswith("whsec_") and secret in response.content.decode()
    page = admin_client.get(f"/admin/integrations/integration/{Integration.objects.get(name='flows').pk}/change/")
    assert secret not in page.content.decode()
