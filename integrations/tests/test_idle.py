"""'Idle' means no work of any kind: open syncs and inbound calls (waiting, being processed, or failed in backoff).
sync_status prints what the database says about the integrations, not this shell's environment."""

import io
import json
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from integrations.models import InboundStatus, InboundWebhook, Integration, IntegrationKind, IntegrationSync, SyncStatus
from integrations.tests.factories import IntegrationFactory
from integrations.tests.test_inbound_processing import APP_TOKEN, FORM_TYPE, link_order_to_deal, secrets  # noqa: F401
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def failed_in_backoff(n: int, *, attempts: int = 2) -> None:
    for i in range(n):
        InboundWebhook.objects.create(
            method="POST",
            path="/bitrix/webhook",
            event="ONCRMDEALUPDATE",
            remote_object=f"DEAL_{i + 1}",
            status=InboundStatus.FAILED,
            result={"attempts": attempts, "retryable": True},
            processed_at=timezone.now(),
            error="crm.deal.get: HTTP 502",
        )


def test_inbound_calls_in_backoff_are_not_idle_in_sync_status_the_api_and_process_syncs():
    failed_in_backoff(3)
    failed_in_backoff(1, attempts=12)  # given up: no more work
    staff = UserFactory(is_staff=True)
    api = APIClient()
    api.force_authenticate(staff)

    document = json.loads(run("sync_status", "--json"))
    text = run("sync_status")
    served = api.get("/api/integrations/status/").json()
    until_idle = run("process_syncs", "--until-idle", "--max-seconds", "5")

    assert document["work"]["idle"] is False and document["work"]["inbound"]["retry_waiting"] == 3
    assert served["work"] == document["work"]
    assert "NOT idle" in text and "3 inbound calls" in text
    assert "NOT idle" in until_idle and "3 inbound calls" in until_idle


def test_nothing_waiting_is_idle():
    failed_in_backoff(1, attempts=12)
    assert json.loads(run("sync_status", "--json"))["work"] == {
        "idle": True,
        "open_syncs": 0,
        "inbound": {"received": 0, "processing": 0, "retry_waiting": 0},
    }
    assert "Work: idle" in run("sync_status")


def test_process_syncs_until_idle_processes_waiting_inbound_calls(client, redis_client, settings):
    from integrations.sandbox.bitrix24 import BitrixSandbox

    with BitrixSandbox(enforce_rate_limit=False) as box:
        order, deal_id, _ = link_order_to_deal(box)
        IntegrationSync.objects.update(status=SyncStatus.SYNCED)  # the order and its deal are in step
        # Only the portal is in this test (another integration's endpoint here refuses connections: never idle).
        Integration.objects.exclude(kind=IntegrationKind.BITRIX24).update(enabled=False)
        box.store.update("deal", deal_id, {"STAGE_ID": "PREPARATION"})
        form = {
            "event": "ONCRMDEALUPDATE",
            "data[FIELDS][ID]": str(deal_id),
            "ts": "1",
            "auth[application_token]": APP_TOKEN,
        }
        settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # no worker: this process must do it
        client.post("/bitrix/webhook", urlencode(form), content_type=FORM_TYPE)
        out = run("process_syncs", "--until-idle", "--max-seconds", "20")
    order.refresh_from_db()
    assert order.status == "confirmed"
    assert "1 inbound calls" in out and "idle" in out and "NOT idle" not in out


def test_sync_status_prints_the_integrations_state_from_the_database_not_this_shells_settings(settings):
    settings.BITRIX_ENABLED = settings.N8N_ENABLED = False  # a second shell without the service's environment
    Integration.objects.create(kind=IntegrationKind.BITRIX24, name="bitrix", endpoint="http://127.0.0.1:9/rest/1/x/")
    IntegrationFactory(kind=IntegrationKind.N8N, name="hooks")
    IntegrationFactory(kind=IntegrationKind.N8N, name="old-hooks", enabled=False, disabled_reason="gone")

    out = run("sync_status")
    document = json.loads(run("sync_status", "--json"))

    assert "BITRIX_ENABLED=False" not in out and "N8N_ENABLED=False" not in out
    assert "Enabled (database): bitrix24=yes n8n=yes" in out
    assert document["settings"] == {"bitrix_enabled": True, "n8n_enabled": True}
    Integration.objects.filter(kind=IntegrationKind.N8N).update(enabled=False)
    assert "Enabled (database): bitrix24=yes n8n=no" in run("sync_status")
    Integration.objects.filter(kind=IntegrationKind.BITRIX24).update(paused_until=timezone.now() + timedelta(hours=1))
    assert "bitrix24=paused" in run("sync_status")
