"""Catch-up over real HTTP: stage changes made in the Bitrix24 sandbox while it posts no events reach the orders."""

import io
from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.utils import timezone

from integrations.inbound import catchup
from integrations.inbound.catchup import catchup_run
from integrations.models import (
    CatchupState,
    EventType,
    ExternalLink,
    InboundStatus,
    InboundWebhook,
    Integration,
    IntegrationKind,
    IntegrationSync,
)
from integrations.sandbox.bitrix24 import BitrixSandbox
from integrations.sandbox.bitrix24.faults import LeakyBucket
from integrations.targets.bitrix_limits import bucket_for
from integrations.tests.factories import IntegrationFactory
from orders.models import Order
from orders.tests.factories import OrderFactory

pytestmark = pytest.mark.django_db(transaction=True)
OURS = "django-orders"


@pytest.fixture
def sandbox():
    box = BitrixSandbox(enforce_rate_limit=False).start()
    box.pause_events()  # every change below is one whose event post never reached us
    yield box
    box.stop()


@pytest.fixture
def portal(sandbox, settings):
    settings.BITRIX_ORIGINATOR_ID = OURS
    bitrix = Integration.objects.create(
        kind=IntegrationKind.BITRIX24, name="bitrix", endpoint=sandbox.webhook_url, rate_limit="100/100"
    )
    IntegrationFactory(kind=IntegrationKind.N8N, name="n8n")
    return bitrix


def linked_orders(box, bitrix, n: int, *, originator: str = OURS, **state) -> list[tuple[Order, int]]:
    """n orders (new), each linked to a deal (NEW) carrying `originator`."""
    pairs = []
    for _ in range(n):
        order = OrderFactory()
        deal_id = box.store.add(
            "deal",
            {"TITLE": f"Order #{order.pk}", "STAGE_ID": "NEW", "ORIGINATOR_ID": originator, "ORIGIN_ID": order.pk},
        )
        ExternalLink.objects.create(
            integration=bitrix,
            content_type=ContentType.objects.get_for_model(Order),
            object_id=str(order.pk),
            remote_id=str(deal_id),
            remote_state={"STAGE_ID": "NEW", **state},
        )
        pairs.append((order, deal_id))
    return pairs


def status_events(order: Order) -> list[dict]:
    """The order's status_changed rows towards n8n (one per change applied)."""
    return list(
        IntegrationSync.objects.filter(
            integration__kind=IntegrationKind.N8N, object_id=str(order.pk), event_type=EventType.STATUS_CHANGED
        ).values_list("changes", flat=True)
    )


def list_calls(box) -> list[dict]:
    return [r for r in box.requests if r["method"] == "crm.deal.list"]


def test_changes_made_while_no_event_was_posted_reach_orders_through_the_inbound_path(sandbox, portal):
    pairs = linked_orders(sandbox, portal, 3)
    for (_, deal_id), stage in zip(pairs, ["PREPARATION", "EXECUTING", "WON"], strict=True):
        sandbox.store.update("deal", deal_id, {"STAGE_ID": stage})
    assert sandbox.stats["events_dropped"] == 6 and not sandbox.events_sent

    result = catchup_run(integration=portal)

    assert (result.outcome, result.calls, result.applied) == ("complete", 1, 3)
    assert [Order.objects.get(pk=o.pk).status for o, _ in pairs] == ["confirmed", "in_progress", "done"]
    for order, _ in pairs:
        assert len(status_events(order)) == 1  # n8n hears order.status_changed, as for an event post
    rows = InboundWebhook.objects.filter(event="CATCHUP").order_by("id")
    assert [(r.status, r.remote_object) for r in rows] == [(InboundStatus.PROCESSED, f"DEAL_{d}") for _, d in pairs]
    state = CatchupState.objects.get(integration=portal)
    assert state.cursor is not None and timezone.now() - state.cursor < timedelta(seconds=10)
    assert (state.last_outcome, state.last_calls, state.last_applied, state.calls_total) == ("complete", 1, 3, 1)
    params = list_calls(sandbox)[0]["params"]
    assert ">=DATE_MODIFY" in params and f'"ORIGINATOR_ID": "{OURS}"' in params and '"DATE_MODIFY": "ASC"' in params


def test_a_second_run_applies_nothing_again_and_costs_one_call(sandbox, portal):
    (order, deal_id), *_ = linked_orders(sandbox, portal, 1)
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "EXECUTING"})
    assert catchup_run(integration=portal).applied == 1
    again = catchup_run(integration=portal)
    assert (again.outcome, again.calls, again.applied) == ("complete", 1, 0)
    assert len(status_events(order)) == 1 and InboundWebhook.objects.filter(event="CATCHUP").count() == 1


def test_our_own_write_read_back_is_not_applied(sandbox, portal):
    """The stage we sent (its answer lost, so STAGE_ID on the link is still the old one) is our echo, not a change."""
    noted = {"sent": [{"stage": "EXECUTING", "at": timezone.now().isoformat()}]}
    (order, deal_id), *_ = linked_orders(sandbox, portal, 1, **noted)
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "EXECUTING"})  # our write landing

    result = catchup_run(integration=portal)

    assert (result.outcome, result.read, result.applied) == ("complete", 1, 0)
    assert Order.objects.get(pk=order.pk).status == "new" and status_events(order) == []
    assert not InboundWebhook.objects.filter(event="CATCHUP").exists()


def test_only_deals_carrying_our_originator_id_are_read(sandbox, portal):
    (order, deal_id), *_ = linked_orders(sandbox, portal, 1, originator="someone-else")
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "WON"})
    result = catchup_run(integration=portal)
    assert (result.outcome, result.read, result.applied) == ("complete", 0, 0)
    assert Order.objects.get(pk=order.pk).status == "new"


def test_a_crash_mid_apply_keeps_the_cursor_and_the_rerun_applies_each_change_once(sandbox, portal, monkeypatch):
    pairs = linked_orders(sandbox, portal, 3)
    for _, deal_id in pairs:
        sandbox.store.update("deal", deal_id, {"STAGE_ID": "PREPARATION"})
    catchup.catchup_rewind(integration=portal, since=timezone.now() - timedelta(minutes=30))
    before = CatchupState.objects.get(integration=portal).cursor
    real, calls = catchup._apply_stage, []

    def crash_on_second(read, deal):
        calls.append(read.remote_id)
        if len(calls) == 2:
            raise ConnectionError("database went away")
        return real(read, deal)

    monkeypatch.setattr(catchup, "_apply_stage", crash_on_second)
    crashed = catchup_run(integration=portal)
    assert crashed.outcome.startswith("failed: ConnectionError")
    assert CatchupState.objects.get(integration=portal).cursor == before  # not advanced past unapplied changes
    assert [Order.objects.get(pk=o.pk).status for o, _ in pairs] == ["confirmed", "new", "new"]

    monkeypatch.setattr(catchup, "_apply_stage", real)
    rerun = catchup_run(integration=portal)
    assert (rerun.outcome, rerun.applied) == ("complete", 2)
    assert [Order.objects.get(pk=o.pk).status for o, _ in pairs] == ["confirmed"] * 3
    assert [len(status_events(o)) for o, _ in pairs] == [1, 1, 1]  # no double apply
    assert CatchupState.objects.get(integration=portal).cursor > before


def test_more_than_one_page_of_changed_deals_is_read_page_by_page(sandbox, portal):
    pairs = linked_orders(sandbox, portal, 120)
    for _, deal_id in pairs:
        sandbox.store.update("deal", deal_id, {"STAGE_ID": "EXECUTING"})

    result = catchup_run(integration=portal)

    assert result.outcome == "complete" and result.applied == 120 and result.read == 120
    assert Order.objects.filter(status="in_progress").count() == 120
    assert result.calls == len(list_calls(sandbox)) >= 3


def test_the_page_limit_leaves_the_rest_to_the_next_run(sandbox, portal):
    pairs = linked_orders(sandbox, portal, 60)
    for _, deal_id in pairs:
        sandbox.store.update("deal", deal_id, {"STAGE_ID": "EXECUTING"})
    first = catchup_run(integration=portal, max_pages=1)
    assert (first.outcome, first.calls, first.applied) == ("more", 1, 50)
    second = catchup_run(integration=portal)
    assert (second.outcome, second.applied) == ("complete", 10)


@pytest.mark.parametrize("fault", ["query_limit", "error_5xx"])
def test_a_portal_error_stops_the_run_without_moving_the_cursor_and_the_next_run_applies(sandbox, portal, fault):
    (order, deal_id), *_ = linked_orders(sandbox, portal, 1)
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "WON"})
    catchup.catchup_rewind(integration=portal, since=timezone.now() - timedelta(minutes=30))
    before = CatchupState.objects.get(integration=portal).cursor
    if fault == "query_limit":  # the portal's bucket is empty: 503 QUERY_LIMIT_EXCEEDED
        sandbox.enforce_rate_limit, sandbox.bucket = True, LeakyBucket(rate=0.001, burst=1)
        sandbox.bucket.admit()
    else:  # asked again at once, up to three times
        sandbox.fail_next(catchup.PAGE_TRIES, "error_5xx")

    stopped = catchup_run(integration=portal)

    assert stopped.outcome.startswith("failed: crm.deal.list")
    assert stopped.calls == (1 if fault == "query_limit" else catchup.PAGE_TRIES) == len(list_calls(sandbox))
    assert CatchupState.objects.get(integration=portal).cursor == before
    assert Order.objects.get(pk=order.pk).status == "new"
    if fault == "query_limit":  # the shared bucket was emptied: deliveries and catch-up wait for its refill
        assert bucket_for(portal).state()["tokens"] < 10
        sandbox.enforce_rate_limit = False
    later = _run_when_spare(portal)
    assert (later.outcome, later.applied) == ("complete", 1)
    assert Order.objects.get(pk=order.pk).status == "done"


@pytest.mark.parametrize("fault", ["error_5xx", "timeout"])
def test_a_page_that_failed_once_is_asked_again_in_the_same_run(sandbox, portal, fault):
    (order, deal_id), *_ = linked_orders(sandbox, portal, 1)
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "WON"})
    sandbox.set_faults(timeout_seconds=0.5)
    portal_timeout = (1.0, 0.2)
    from django.test import override_settings

    sandbox.fail_next(1, fault)
    with override_settings(BITRIX_TIMEOUT=portal_timeout):
        result = catchup_run(integration=portal)
    assert (result.outcome, result.calls, result.applied) == ("complete", 2, 1)


def _run_when_spare(portal, timeout: float = 5.0):
    deadline = timezone.now() + timedelta(seconds=timeout)
    while True:
        result = catchup_run(integration=portal)
        if result.outcome != "no spare capacity" or timezone.now() > deadline:
            return result


def test_without_spare_rate_limit_capacity_no_call_is_made(sandbox, portal):
    (order, deal_id), *_ = linked_orders(sandbox, portal, 1)
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "WON"})
    portal.rate_limit = "0.01/50"  # the bucket refills slowly: half of it stays out of reach during the test
    portal.save(update_fields=["rate_limit"])
    bucket = bucket_for(portal)
    for _ in range(30):  # deliveries took 30 of 50 tokens: 20 left, under half
        assert bucket.try_acquire() == 0.0

    result = catchup_run(integration=portal)

    assert (result.outcome, result.calls) == ("no spare capacity", 0) and list_calls(sandbox) == []
    assert Order.objects.get(pk=order.pk).status == "new"


def test_a_run_while_another_holds_the_integration_is_skipped(portal):
    with catchup._exclusive(portal.pk):
        from threading import Thread

        from django.db import connection

        found = {}

        def other():
            found["result"] = catchup_run(integration=portal)
            connection.close()

        thread = Thread(target=other)
        thread.start()
        thread.join()
    assert found["result"].outcome == "busy"


def test_command_since_rewinds_the_cursor_and_catches_up(sandbox, portal):
    (order, deal_id), *_ = linked_orders(sandbox, portal, 1)
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "LOSE"})
    catchup.catchup_rewind(integration=portal, since=timezone.now() + timedelta(hours=1))  # as if read past it
    assert catchup_run(integration=portal).applied == 0

    out = io.StringIO()
    call_command("bitrix_catchup", "--since", "2h", stdout=out)

    assert "complete; 1 calls, 1 deals read, 1 orders changed" in out.getvalue()
    assert Order.objects.get(pk=order.pk).status == "cancelled"


def test_command_says_what_since_takes(portal):
    with pytest.raises(CommandError, match="30m, 6h, 2d"):
        call_command("bitrix_catchup", "--since", "yesterday")


def test_the_migration_installs_the_periodic_task_for_existing_databases():
    import importlib

    from django.apps import apps
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.all().delete()
    importlib.import_module("integrations.migrations.0009_catchup_state").install_catchup_task(apps, None)
    task = PeriodicTask.objects.get()  # only the new task: other rows stay as operators left them
    assert (task.name, task.task, task.interval.every) == ("bitrix_catchup", "integrations.tasks.bitrix_catchup", 300)


def test_the_sandbox_filters_date_modify_as_a_moment_whatever_the_offset(sandbox):
    deal_id = sandbox.store.add("deal", {"TITLE": "x", "ORIGINATOR_ID": OURS})
    modified = sandbox.store.get("deal", deal_id)["DATE_MODIFY"]
    from datetime import datetime
    from datetime import timezone as tz

    moment = datetime.fromisoformat(modified)
    elsewhere = moment.astimezone(tz(timedelta(hours=-7))).isoformat()
    later = (moment + timedelta(seconds=1)).astimezone(tz(timedelta(hours=5))).isoformat()
    assert [r["ID"] for r in sandbox.store.list("deal", {"filter": {">=DATE_MODIFY": elsewhere}})[0]] == [str(deal_id)]
    assert sandbox.store.list("deal", {"filter": {">=DATE_MODIFY": later}})[0] == []


def test_status_api_and_dashboard_show_cursor_lag_last_run_and_calls(sandbox, portal):
    from django.contrib.auth.models import Permission
    from django.test import Client
    from rest_framework.test import APIClient

    from users.tests.factories import UserFactory

    user = UserFactory(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_integrationsync"))
    api = APIClient()
    api.force_authenticate(user)
    before = {i["name"]: i for i in api.get("/api/integrations/status/").json()["integrations"]}
    assert before["bitrix"]["catchup"]["last_run_at"] is None and before["n8n"]["catchup"] is None

    catchup_run(integration=portal)

    shown = {i["name"]: i for i in api.get("/api/integrations/status/").json()["integrations"]}["bitrix"]["catchup"]
    assert shown["last_outcome"] == "complete" and shown["last_calls"] == shown["calls_total"] == 1
    assert shown["cursor"] is not None and 0 <= shown["lag_seconds"] < 10 and shown["last_run_at"] is not None
    page = Client()
    page.force_login(user)
    html = page.get("/admin/integrations/dashboard/").content.decode()
    assert "catch-up of lost deal events: lag" in html and "complete, 1 call, 0 applied" in html


def test_sync_status_says_the_catch_up_lag_and_last_run(sandbox, portal):
    out = io.StringIO()
    call_command("sync_status", stdout=out)
    assert "bitrix: catch-up not run yet" in out.getvalue()
    catchup_run(integration=portal)
    out = io.StringIO()
    call_command("sync_status", stdout=out)
    assert "bitrix: catch-up lag" in out.getvalue() and "complete (1 calls, 1 in all)" in out.getvalue()
