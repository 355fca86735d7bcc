"""Operations commands: sync_status, sync_explain (with a live Bitrix24 sandbox lookup), sync_retry, resync."""

import io
import json
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from integrations import dispatcher
from integrations.clients.bitrix24 import BitrixClient
from integrations.models import (
    EventType,
    ExternalLink,
    Heartbeat,
    InboundWebhook,
    Integration,
    IntegrationKind,
    IntegrationSync,
    SyncStatus,
)
from integrations.sandbox.bitrix24 import BitrixSandbox
from integrations.tests.factories import IntegrationFactory
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def sandbox(redis_client):
    box = BitrixSandbox(enforce_rate_limit=False).start()
    yield box
    box.stop()


@pytest.fixture
def bitrix(sandbox):
    return Integration.objects.create(kind=IntegrationKind.BITRIX24, name="bitrix", endpoint=sandbox.webhook_url)


def order_rows(order, integration=None):
    rows = IntegrationSync.objects.filter(content_type__model="order", object_id=str(order.pk))
    return rows.filter(integration=integration) if integration else rows


# sync_status


def test_sync_status_prints_tables_and_never_the_webhook_code(bitrix, sandbox):
    IntegrationFactory(name="hooks", enabled=False, disabled_reason="receiver answered 410")
    OrderFactory()
    IntegrationSync.objects.filter(integration=bitrix, content_type__model="order").update(status=SyncStatus.DEAD)
    Heartbeat.objects.create(name="celery@gone", kind="worker", seen_at=timezone.now() - timedelta(minutes=10))

    out = run("sync_status")

    assert sandbox.code not in out and sandbox.webhook_url not in out
    assert "bitrix" in out and "http://127.0.0.1:" in out and "/***" in out
    bitrix_line = next(line for line in out.splitlines() if line.startswith(f"{bitrix.pk} ") and "bitrix" in line)
    assert bitrix_line.split()[4:10] == ["1", "0", "0", "0", "0", "1"]  # pending … dead
    assert "disabled: receiver answered 410" in out
    assert "rate-limit bucket 50/50 tokens" in out
    assert "celery@gone" in out and "DOWN" in out
    assert "Broker: reachable" in out and "LLEN celery" in out


def test_sync_status_json_is_the_status_document(bitrix, sandbox, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    document = json.loads(run("sync_status", "--json"))

    assert document["broker"] == {"reachable": False, "queue_length": None}
    assert document["integrations"][0]["endpoint"].endswith("/***")
    assert sandbox.code not in json.dumps(document)


# sync_explain


def test_sync_explain_shows_the_timeline_and_flags_a_duplicate_deal_in_bitrix(bitrix, sandbox):
    order = OrderFactory()
    dispatcher.drain()
    link = ExternalLink.objects.get(integration=bitrix, object_id=str(order.pk), content_type__model="order")
    fields = {"TITLE": f"Order #{order.pk}", "ORIGINATOR_ID": django_settings.BITRIX_ORIGINATOR_ID}
    planted = BitrixClient(sandbox.webhook_url).call("crm.deal.add", {"fields": {**fields, "ORIGIN_ID": str(order.pk)}})
    assert planted.ok, planted
    duplicate = str(planted.result)
    InboundWebhook.objects.create(
        method="POST", path="/bitrix/webhook", event="ONCRMDEALUPDATE", remote_object=f"DEAL_{link.remote_id}"
    )
    InboundWebhook.objects.create(method="POST", path="/bitrix/webhook", event="ROBOT", body=f"id=DEAL_{duplicate}")
    InboundWebhook.objects.create(method="POST", path="/bitrix/webhook", event="ROBOT", remote_object="DEAL_99999")

    out = run("sync_explain", "order", str(order.pk))

    assert sandbox.code not in out and sandbox.webhook_url not in out
    assert f"order:{order.pk}: Order #{order.pk}" in out and f"title={order.title}" in out
    assert "order.created seq 1" in out and "attempt 1" in out and "HTTP 200" in out
    assert f"remote {link.remote_id}" in out
    assert f"DEAL_{link.remote_id}" in out and f"DEAL_{duplicate}" not in out.split("Links")[1]
    assert "ONCRMDEALUPDATE" in out and out.count("ROBOT") == 1  # the call about deal 99999 is someone else's
    remote = out.split("Remote (bitrix")[1]
    assert f"{link.remote_id}" in remote and "linked" in remote
    assert f"{duplicate}" in remote and "NOT LINKED" in remote
    assert "DUPLICATE: 2 deals carry ORIGIN_ID" in remote
    assert f"DUPLICATE: deal {duplicate} is not the linked deal {link.remote_id}" in remote


def test_sync_explain_for_a_user_looks_up_contacts_and_is_ok_without_duplicates(bitrix, sandbox):
    order = OrderFactory()
    dispatcher.drain()

    out = run("sync_explain", "user", str(order.user_id))

    assert "user.created" in out and "crm.contact.list" in out
    assert "OK: exactly the linked record" in out and "DUPLICATE" not in out


def test_sync_explain_says_when_the_portal_cannot_be_asked(bitrix, sandbox):
    order = OrderFactory()
    sandbox.stop()

    out = run("sync_explain", "order", str(order.pk))

    assert "lookup failed" in out and sandbox.code not in out
    assert "Links: none" in out


def test_sync_explain_of_a_deleted_object_and_without_remote(bitrix):
    order = OrderFactory()
    order_id = order.pk
    order.delete()

    out = run("sync_explain", "order", str(order_id), "--no-remote")

    assert "not in the database" in out and "order.deleted" in out and "Remote" not in out


def test_sync_explain_rejects_bad_ids():
    with pytest.raises(CommandError, match="positive integer"):
        run("sync_explain", "order", "x1")


# sync_retry


def dead_order(integration, **fields):
    order = OrderFactory()
    order_rows(order, integration).update(status=SyncStatus.DEAD, attempts=10, last_error="HTTP 503", **fields)
    return order


def test_sync_retry_dry_run_lists_and_changes_nothing():
    hooks = IntegrationFactory(name="hooks")
    order = dead_order(hooks)

    out = run("sync_retry", "--dry-run")

    assert "would retry" in out and f"order:{order.pk}" in out and "1 rows matched; would retry 1." in out
    assert order_rows(order).get().status == SyncStatus.DEAD


def test_sync_retry_makes_matching_rows_due_and_leaves_others(recording_target):
    hooks, other = IntegrationFactory(name="hooks"), IntegrationFactory(name="other")
    first, second = dead_order(hooks), dead_order(hooks)
    order_rows(second, hooks).update(status=SyncStatus.FAILED)
    IntegrationSync.objects.filter(integration=other).update(status=SyncStatus.DEAD)

    out = run("sync_retry", "--integration", "hooks", "--object", f"order:{first.pk}")

    assert "retried" in out and "1 rows matched; retried 1." in out
    assert order_rows(first, hooks).get().status == SyncStatus.PENDING
    assert order_rows(second, hooks).get().status == SyncStatus.FAILED
    assert order_rows(first, other).get().status == SyncStatus.DEAD

    run("sync_retry", "--status", "failed", "--integration", str(hooks.pk))
    assert order_rows(second, hooks).get().status == SyncStatus.PENDING
    dispatcher.drain(integration_id=hooks.pk)
    assert set(order_rows(first, hooks).values_list("status", flat=True)) == {SyncStatus.SYNCED}


def test_sync_retry_filters_by_since_and_skips_stale_bitrix_state():
    bitrix = IntegrationFactory(kind=IntegrationKind.BITRIX24, endpoint="https://p.example/rest/1/abcdef123456/")
    old, recent = dead_order(bitrix), dead_order(bitrix)
    order_rows(old).update(created_at=timezone.now() - timedelta(days=10))
    recent.title = "newer"
    recent.save()
    order_rows(recent).filter(event_type=EventType.UPDATED).update(status=SyncStatus.SYNCED)

    out = run("sync_retry", "--since", (timezone.now() - timedelta(days=1)).date().isoformat())

    assert f"order:{old.pk}" not in out
    assert "skipped: a newer row of this object was delivered" in out and "retried 0" in out
    assert "abcdef123456" not in out


def test_sync_retry_rejects_unknown_integration_and_bad_object():
    with pytest.raises(CommandError, match="no integration"):
        run("sync_retry", "--integration", "nope")
    with pytest.raises(CommandError, match="order:41"):
        run("sync_retry", "--object", "order41")
    with pytest.raises(CommandError, match="--since"):
        run("sync_retry", "--since", "last tuesday")


# resync


def test_resync_one_order_records_an_updated_event_with_current_state():
    hooks = IntegrationFactory(name="hooks")
    order = OrderFactory(title="now")

    out = run("resync", "order", str(order.pk))

    row = order_rows(order, hooks).filter(event_type=EventType.UPDATED).get()
    assert (row.changes, row.payload["title"], row.status, row.sequence) == ({}, "now", SyncStatus.PENDING, 2)
    assert "resynced 1 order(s): 1 sync rows recorded" in out


def test_resync_since_and_all_cover_the_right_objects():
    IntegrationFactory()
    old, new = OrderFactory(), OrderFactory()
    type(old).objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=30))
    staff = UserFactory(is_staff=True)

    assert "would resync 2 order(s)" in run("resync", "order", "--since", "2000-01-01", "--dry-run")
    assert not IntegrationSync.objects.filter(event_type=EventType.UPDATED).exists()
    run("resync", "order", "--since", (timezone.now() - timedelta(days=1)).isoformat())
    assert order_rows(new).filter(event_type=EventType.UPDATED).count() == 1
    assert order_rows(old).filter(event_type=EventType.UPDATED).count() == 0

    run("resync", "user", "--all")
    users = IntegrationSync.objects.filter(content_type__model="user", event_type=EventType.UPDATED)
    assert set(users.values_list("object_id", flat=True)) == {str(old.user_id), str(new.user_id)}
    assert str(staff.pk) not in set(users.values_list("object_id", flat=True))


def test_resync_can_be_limited_to_one_integration():
    hooks, crm = IntegrationFactory(name="hooks"), IntegrationFactory(name="crm")
    order = OrderFactory()

    out = run("resync", "order", str(order.pk), "--integration", "crm")

    assert order_rows(order, crm).filter(event_type=EventType.UPDATED).count() == 1
    assert order_rows(order, hooks).filter(event_type=EventType.UPDATED).count() == 0
    assert "1 sync rows recorded" in out
    with pytest.raises(CommandError, match="no integration 'nope'"):
        run("resync", "order", str(order.pk), "--integration", "nope")


def test_resync_needs_exactly_one_selection_and_an_existing_object():
    with pytest.raises(CommandError, match="exactly one"):
        run("resync", "order")
    with pytest.raises(CommandError, match="exactly one"):
        run("resync", "order", "1", "--all")
    with pytest.raises(CommandError, match="does not exist"):
        run("resync", "order", "987654")
