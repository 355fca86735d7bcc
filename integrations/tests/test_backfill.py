"""bitrix_backfill: an existing shop onboarded to a portal (and n8n) that never saw it, over real HTTP on PostgreSQL."""

import threading
from collections import Counter
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db.models import Value
from django.db.models.functions import Concat

from integrations import outbox, payloads
from integrations.models import EventType, ExternalLink, Integration, IntegrationKind, IntegrationSync
from integrations.tests.support import drain_all
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    """Customers and orders saved before any integration existed: no sync row, no link."""
    users = [UserFactory() for _ in range(5)]
    orders = [OrderFactory(user=users[i % 5]) for i in range(10)]
    UserFactory(is_staff=True)  # staff accounts are never synced
    assert not IntegrationSync.objects.exists()
    return users, orders


@pytest.fixture
def portal(shop, bitrix_sandbox, settings, redis_client):
    settings.BITRIX_TIMEOUT = (2.0, 1.0)
    return Integration.objects.create(
        kind=IntegrationKind.BITRIX24, name="portal", endpoint=bitrix_sandbox.webhook_url, rate_limit="2/50"
    )


def backfill(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("bitrix_backfill", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def summary_row(out: str, integration: str, kind: str) -> list[str]:
    """The summary table's row: name, kind, objects, already, adopted ORIGIN_ID, adopted title, queued now, backfill
    rows, delivered, failed."""
    return next(line.split() for line in out.splitlines() if line.split()[:2] == [integration, kind])


def per_origin(rows: dict) -> Counter:
    return Counter(str(r.get("ORIGIN_ID")) for r in rows.values() if r.get("ORIGINATOR_ID"))


def assert_one_each(sandbox, integration, users, orders) -> None:
    assert per_origin(sandbox.contacts) == Counter({str(u.pk): 1 for u in users})
    assert per_origin(sandbox.deals) == Counter({str(o.pk): 1 for o in orders})
    assert ExternalLink.objects.filter(integration=integration).count() == len(users) + len(orders)


def test_every_customer_and_order_gets_exactly_one_contact_and_deal(bitrix_sandbox, portal, shop):
    users, orders = shop
    out, _ = backfill("--no-wait")
    drain_all()
    assert_one_each(bitrix_sandbox, portal, users, orders)
    deals = {d["ORIGIN_ID"]: d for d in bitrix_sandbox.deals.values()}
    contacts = {c["ORIGIN_ID"]: c["ID"] for c in bitrix_sandbox.contacts.values()}
    assert all(deals[str(o.pk)]["CONTACT_IDS"] == [contacts[str(o.user_id)]] for o in orders)
    assert summary_row(out, "portal", "order")[2:] == ["10", "0", "0", "0", "10", "10", "0", "0"]
    assert summary_row(out, "portal", "user")[2:] == ["5", "0", "0", "0", "5", "5", "0", "0"]
    assert "Portal reads before queueing: 4 call(s)" in out
    # Portal reads: profile + 3 empty lists; then 1 contact batch + 1 deal batch.
    methods = Counter(r["method"] for r in bitrix_sandbox.requests)
    assert methods == Counter({"profile": 1, "crm.contact.list": 1, "crm.deal.list": 2, "batch": 2})


def test_a_second_run_queues_nothing(bitrix_sandbox, portal, shop):
    backfill("--no-wait")
    drain_all()
    rows = IntegrationSync.objects.count()
    out, _ = backfill("--no-wait")
    assert IntegrationSync.objects.count() == rows
    assert summary_row(out, "portal", "order")[2:] == ["10", "10", "0", "0", "0", "10", "10", "0"]


def test_existing_deals_are_adopted_by_origin_id_and_by_title_not_duplicated_and_reported(bitrix_sandbox, portal, shop):
    users, orders = shop
    store, originator = bitrix_sandbox.store, settings.BITRIX_ORIGINATOR_ID
    by_origin = store.add("deal", {"TITLE": "imported", "ORIGINATOR_ID": originator, "ORIGIN_ID": str(orders[0].pk)})
    by_title = store.add("deal", {"TITLE": f"Order #{orders[1].pk}", "STAGE_ID": "PREPARATION"})
    store.add("deal", {"TITLE": "Order #999999"})  # an old deal of an order this shop does not have: left alone
    contact = store.add("contact", {"NAME": "old", "ORIGINATOR_ID": originator, "ORIGIN_ID": str(users[0].pk)})
    out, _ = backfill("--no-wait")
    drain_all()
    assert_one_each(bitrix_sandbox, portal, users, orders)
    links = dict(
        ExternalLink.objects.filter(integration=portal).values_list(
            Concat("content_type__model", Value(":"), "object_id"), "remote_id"
        )
    )
    assert links[f"order:{orders[0].pk}"] == str(by_origin) and links[f"order:{orders[1].pk}"] == str(by_title)
    assert links[f"user:{users[0].pk}"] == str(contact)
    adopted = bitrix_sandbox.deals[by_title]
    assert adopted["ORIGIN_ID"] == str(orders[1].pk) and adopted["TITLE"] == f"Order #{orders[1].pk}"
    assert len(bitrix_sandbox.deals) == len(orders) + 1  # + the unknown old deal, untouched
    assert "adopted 3 existing remote object(s)" in out
    assert summary_row(out, "portal", "order")[2:7] == ["10", "0", "1", "1", "10"]
    report = [line.split() for line in out.splitlines()]
    assert ["order", str(orders[1].pk), str(by_title), "title"] in report
    assert ["order", str(orders[0].pk), str(by_origin), "ORIGIN_ID"] in report


class Interrupted(KeyboardInterrupt):
    pass


def test_interrupted_in_the_second_chunk_and_run_again_gives_no_duplicate_and_no_gap(
    bitrix_sandbox, portal, shop, monkeypatch
):
    users, orders = shop
    real_record, calls = outbox.record, []

    def record_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # inside the second chunk of two: its transaction must roll back whole
            raise Interrupted()
        return real_record(*args, **kwargs)

    monkeypatch.setattr("integrations.backfill.outbox.record", record_then_ctrl_c)
    with pytest.raises(CommandError, match="run the command again"):
        backfill("--no-wait", "--chunk", "2")
    assert IntegrationSync.objects.filter(backfill=True).count() == 2  # the first chunk, committed
    drain_all()  # the workers deliver what was queued before the crash
    monkeypatch.setattr("integrations.backfill.outbox.record", real_record)
    backfill("--no-wait", "--chunk", "2")
    drain_all()
    assert_one_each(bitrix_sandbox, portal, users, orders)
    created = IntegrationSync.objects.filter(integration=portal, event_type=EventType.CREATED)
    assert created.count() == len(users) + len(orders)


@pytest.mark.django_db(transaction=True)  # the worker thread must see the queued rows
def test_the_command_waits_and_shows_delivery_progress_with_rate(bitrix_sandbox, portal, shop):
    users, orders = shop
    stop = threading.Event()

    def worker():
        from django.db import connection

        from integrations import dispatcher

        try:
            while not stop.is_set():
                dispatcher.drain(max_seconds=5) or stop.wait(0.1)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        out, err = backfill()
    finally:
        stop.set()
        thread.join(10)
    assert_one_each(bitrix_sandbox, portal, users, orders)
    assert "delivered" in err and "obj/s" in err and "15/15" in err
    assert summary_row(out, "portal", "order")[-3:] == ["10", "10", "0"]  # backfill rows, delivered, failed


def test_watch_queues_nothing_and_shows_what_was_delivered(bitrix_sandbox, portal, shop):
    backfill("--no-wait")
    drain_all()
    rows = IntegrationSync.objects.count()
    out, _ = backfill("--watch")
    assert IntegrationSync.objects.count() == rows
    assert summary_row(out, "portal", "order")[2:] == ["-", "-", "-", "-", "-", "10", "10", "0"]


@pytest.mark.parametrize("case", ["unknown", "disabled", "rejected", "not bitrix"])
def test_bad_input_is_refused_before_anything_is_queued(shop, bitrix_sandbox, redis_client, case, n8n_integration):
    endpoint = bitrix_sandbox.webhook_url
    if case == "rejected":
        endpoint = endpoint.replace(bitrix_sandbox.code, "wrong-code")
    Integration.objects.create(
        kind=IntegrationKind.BITRIX24, name="portal", endpoint=endpoint, enabled=case != "disabled"
    )
    name = {"unknown": "nope", "not bitrix": n8n_integration.name}.get(case, "portal")
    expected = {
        "unknown": "no integration 'nope'",
        "disabled": "is disabled",
        "rejected": "rejected the credentials",
        "not bitrix": "not bitrix24",
    }[case]
    with pytest.raises(CommandError, match=expected) as raised:
        backfill("--integration", name, "--n8n", n8n_integration.name)
    assert "wrong-code" not in str(raised.value)
    assert not IntegrationSync.objects.exists() and not ExternalLink.objects.exists()
    assert [r["method"] for r in bitrix_sandbox.requests] in ([], ["profile"])


def test_n8n_gets_created_snapshots_marked_backfill_only_when_asked(
    shop, bitrix_sandbox, portal, n8n_receiver, n8n_integration
):
    users, orders = shop
    backfill("--no-wait")
    assert not IntegrationSync.objects.filter(integration=n8n_integration).exists()  # not without --n8n
    backfill("--no-wait", "--n8n", n8n_integration.name)
    drain_all()
    bodies = [e.body for e in n8n_receiver.unique_events()]
    assert Counter(b["type"] for b in bodies) == {"user.created": len(users), "order.created": len(orders)}
    assert all(b["backfill"] is True for b in bodies)
    assert {b["object"]["id"] for b in bodies if b["type"] == "order.created"} == {o.pk for o in orders}


def test_n8n_alone_when_only_n8n_is_named(shop, bitrix_sandbox, portal, n8n_receiver, n8n_integration):
    backfill("--no-wait", "--n8n", n8n_integration.name)
    assert not IntegrationSync.objects.filter(integration=portal).exists()
    assert bitrix_sandbox.requests == []


def test_an_ordinary_event_body_has_no_backfill_key():
    common = {"event_id": "e", "object_type": "order", "event_type": "created", "object_id": "1", "sequence": 1}
    from django.utils import timezone

    plain = payloads.n8n_event(**common, occurred_at=timezone.now(), data={}, changes={})
    marked = payloads.n8n_event(**common, occurred_at=timezone.now(), data={}, changes={}, backfill=True)
    assert "backfill" not in plain and marked["backfill"] is True


# -- the admin action -------------------------------------------------------------------------------------------

CHANGELIST = "/admin/integrations/integration/"


@pytest.fixture
def admin_client(shop):
    from django.test import Client

    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def run_action(client, integration):
    response = client.post(
        CHANGELIST, {"action": "backfill", "_selected_action": [integration.pk], "index": 0}, follow=True
    )
    assert response.status_code == 200
    return [str(m) for m in response.context["messages"]]


def test_the_admin_action_queues_a_small_shop_in_the_request(bitrix_sandbox, portal, shop, admin_client):
    users, orders = shop
    [message] = run_action(admin_client, portal)
    assert "15 customers and orders queued" in message and "--watch" in message
    drain_all()
    assert_one_each(bitrix_sandbox, portal, users, orders)


def test_the_admin_action_hands_a_big_shop_to_a_worker(bitrix_sandbox, portal, shop, admin_client, monkeypatch):
    from integrations import backfill_admin, tasks

    sent = []
    monkeypatch.setattr(backfill_admin, "INLINE_MAX", 3)
    monkeypatch.setattr(tasks.backfill_integration, "apply_async", lambda args, retry: sent.append(args))
    [message] = run_action(admin_client, portal)
    assert sent == [[portal.pk]] and "runs in a worker" in message and "--watch" in message
    assert not IntegrationSync.objects.exists()
    tasks.backfill_integration(portal.pk)  # what the worker runs
    drain_all()
    assert_one_each(bitrix_sandbox, portal, *shop)


def test_the_admin_action_refuses_a_portal_that_rejects_the_credentials(bitrix_sandbox, shop, admin_client):
    integration = Integration.objects.create(
        kind=IntegrationKind.BITRIX24,
        name="portal",
        endpoint=bitrix_sandbox.webhook_url.replace(bitrix_sandbox.code, "x"),
    )
    [message] = run_action(admin_client, integration)
    assert "rejected the credentials" in message
    assert not IntegrationSync.objects.exists()


def test_the_worker_task_stops_within_its_time_limit_and_goes_on_in_a_new_task(
    bitrix_sandbox, portal, shop, monkeypatch
):
    from integrations import tasks

    sent = []
    monkeypatch.setattr(tasks, "BACKFILL_TASK_SECONDS", 0)  # stop after every chunk
    monkeypatch.setattr("integrations.backfill.CHUNK", 4)
    monkeypatch.setattr(tasks.backfill_integration, "apply_async", lambda args, retry: sent.append(args))
    tasks.backfill_integration(portal.pk)
    assert sent == [[portal.pk]] and IntegrationSync.objects.filter(backfill=True).count() == 4
    for _ in range(10):  # what the worker does with each re-queued task
        before = len(sent)
        tasks.backfill_integration(portal.pk)
        if len(sent) == before:
            break
    assert len(sent) == 5  # chunks of 4: users 4 + 1, orders 4 + 4 + 2; the 6th run found nothing left
    drain_all()
    assert_one_each(bitrix_sandbox, portal, *shop)
    assert IntegrationSync.objects.filter(backfill=True).count() == 15
