"""sync_bootstrap on every deploy: env changes are applied, an operator's edits and a 410's disabling are kept and
reported (never silently undone), secrets never printed. On PostgreSQL."""

from io import StringIO

import pytest
from django.core.management import call_command

from integrations.clients.n8n import generate_secret
from integrations.models import Integration, IntegrationSync, SyncStatus
from orders.tests.factories import OrderFactory

pytestmark = pytest.mark.django_db
BITRIX_URL = "https://p.example/rest/1/code0123456789/"


@pytest.fixture
def env(settings):
    settings.BITRIX_WEBHOOK_URL = BITRIX_URL
    settings.BITRIX_ENABLED = True
    settings.BITRIX_RATE_LIMIT = "2/50"
    settings.N8N_WEBHOOK_URL = "https://n8n.example/webhook/shop"
    settings.N8N_ENABLED = True
    settings.N8N_WEBHOOK_SECRET = generate_secret()
    return settings


def bootstrap(*args) -> str:
    out = StringIO()
    call_command("sync_bootstrap", *args, stdout=out)
    text = out.getvalue()
    assert "code0123456789" not in text and "whsec_" not in text
    return text


def test_a_second_run_without_changes_changes_nothing(env):
    first = bootstrap()
    assert "bitrix24: created (enabled=True)" in first and "n8n-default: created (enabled=True)" in first
    out = bootstrap()
    assert "bitrix24: up to date" in out and "n8n-default: up to date" in out


def test_an_env_change_is_applied_and_said(env):
    bootstrap()
    env.BITRIX_RATE_LIMIT = "5/100"
    env.BITRIX_WEBHOOK_URL = "https://p.example/rest/1/othercode98765/"
    out = bootstrap()
    bitrix = Integration.objects.get(name="bitrix24")
    assert bitrix.rate_limit == "5/100" and bitrix.endpoint == env.BITRIX_WEBHOOK_URL
    assert "rate_limit set to 5/100 from BITRIX_RATE_LIMIT" in out and "endpoint updated" in out
    assert "othercode98765" not in out


def test_a_field_edited_in_the_admin_is_kept_and_reported_until_overwrite(env):
    bootstrap()
    Integration.objects.filter(name="bitrix24").update(rate_limit="4/80")  # the operator's edit
    out = bootstrap()
    assert Integration.objects.get(name="bitrix24").rate_limit == "4/80"
    assert "rate_limit (4/80) was changed in the admin and differs from BITRIX_RATE_LIMIT: kept" in out
    bootstrap("--overwrite")
    assert Integration.objects.get(name="bitrix24").rate_limit == "2/50"


def test_an_integration_disabled_by_a_410_or_an_operator_is_not_enabled_again(env):
    bootstrap()
    Integration.objects.filter(name="n8n-default").update(enabled=False, disabled_reason="n8n answered 410 Gone")
    Integration.objects.filter(name="bitrix24").update(enabled=False)
    out = bootstrap()
    assert not Integration.objects.get(name="n8n-default").enabled
    assert not Integration.objects.get(name="bitrix24").enabled
    assert "n8n-default: left disabled (n8n answered 410 Gone) although N8N_ENABLED is on" in out
    assert "bitrix24: left disabled although BITRIX_ENABLED is on" in out


def test_enabling_through_the_env_is_applied_and_sends_bitrix_what_it_missed(env):
    env.BITRIX_ENABLED = False
    bootstrap()
    order = OrderFactory()
    rows = IntegrationSync.objects.filter(
        integration__name="bitrix24", content_type__model="order", object_id=str(order.pk)
    )
    assert set(rows.values_list("status", flat=True)) == {SyncStatus.SKIPPED}
    env.BITRIX_ENABLED = True
    out = bootstrap()
    assert Integration.objects.get(name="bitrix24").enabled
    assert "enabled set to True from BITRIX_ENABLED" in out and "latest state queued for 2 objects" in out
    assert rows.filter(status=SyncStatus.PENDING).count() == 1


def test_a_value_set_before_fingerprints_existed_is_kept_and_reported(env):
    Integration.objects.create(kind="bitrix24", name="bitrix24", endpoint=BITRIX_URL, rate_limit="3/60")
    out = bootstrap()
    assert Integration.objects.get(name="bitrix24").rate_limit == "3/60" and "kept" in out


def test_the_n8n_secret_is_kept_when_the_env_has_none_and_generated_for_a_new_integration(env):
    env.N8N_WEBHOOK_SECRET = ""
    bootstrap()
    secret = Integration.objects.get(name="n8n-default").secret
    assert secret.startswith("whsec_")
    bootstrap()
    assert Integration.objects.get(name="n8n-default").secret == secret


def test_a_stored_value_that_cannot_be_used_is_replaced_by_the_env_and_said(env):
    bootstrap()
    Integration.objects.filter(name="bitrix24").update(rate_limit="2", paused_until="2100-01-01T00:00:00Z")
    Integration.objects.filter(name="bitrix24").update(disabled_reason="configuration error: rate limit must be …")
    out = bootstrap()
    bitrix = Integration.objects.get(name="bitrix24")
    assert bitrix.rate_limit == "2/50" and "the stored value could not be used" in out
    assert bitrix.paused_until is None and bitrix.disabled_reason == ""  # the pause it caused is lifted


def test_turning_the_env_switch_off_disables_with_the_reason(env):
    bootstrap()
    env.BITRIX_ENABLED = False
    out = bootstrap()
    bitrix = Integration.objects.get(name="bitrix24")
    assert not bitrix.enabled and bitrix.disabled_reason == "BITRIX_ENABLED is off (sync_bootstrap)"
    assert "enabled set to False from BITRIX_ENABLED" in out
