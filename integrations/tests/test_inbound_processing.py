"""inbound_process against the Bitrix24 sandbox: pull the deal, map its stage, apply through the order service."""

import threading
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.utils import timezone

from integrations.inbound import services
from integrations.inbound.processing import inbound_process
from integrations.models import (
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
from integrations.tests.factories import IntegrationFactory
from orders.models import Order
from orders.tests.factories import OrderFactory

APP_TOKEN = "app-token-for-tests-0001"
FORM_TYPE = "application/x-www-form-urlencoded"


@pytest.fixture
def sandbox():
    box = BitrixSandbox(enforce_rate_limit=False).start()
    yield box
    box.stop()


@pytest.fixture(autouse=True)
def secrets(settings):
    settings.BITRIX_WEBHOOK_TOKEN = "webhook-token-0001"
    settings.BITRIX_APPLICATION_TOKEN = APP_TOKEN


@pytest.fixture
def sent(monkeypatch):
    from integrations.tasks import process_inbound

    messages: list[int] = []
    monkeypatch.setattr(process_inbound, "apply_async", lambda args, **kw: messages.append(args[0]))
    return messages


def link_order_to_deal(box) -> tuple[Order, int, Integration]:
    """An order (new) linked to a sandbox deal (NEW), a Bitrix integration on the sandbox and an n8n integration."""
    bitrix = Integration.objects.create(kind=IntegrationKind.BITRIX24, name="bitrix", endpoint=box.webhook_url)
    n8n = IntegrationFactory(kind=IntegrationKind.N8N, name="n8n")
    return (*_order_with_deal(box, bitrix), n8n)


def _order_with_deal(box, bitrix: Integration) -> tuple[Order, int]:
    order = OrderFactory()
    deal_id = box.store.add("deal", {"TITLE": f"Order #{order.pk}", "STAGE_ID": "NEW"})
    ExternalLink.objects.create(
        integration=bitrix,
        content_type=ContentType.objects.get_for_model(Order),
        object_id=str(order.pk),
        remote_id=str(deal_id),
        remote_state={"STAGE_ID": "NEW"},
    )
    return order, deal_id


@pytest.fixture
def linked(sandbox):
    return link_order_to_deal(sandbox)


def deal_event(client, deal_id, event="ONCRMDEALUPDATE", ts="1700000001") -> InboundWebhook:
    form = {"event": event, "data[FIELDS][ID]": str(deal_id), "ts": ts, "auth[application_token]": APP_TOKEN}
    response = client.post("/bitrix/webhook", urlencode(form), content_type=FORM_TYPE)
    return InboundWebhook.objects.get(pk=response.json()["id"])


def status_changes(integration) -> list[dict]:
    return list(
        IntegrationSync.objects.filter(integration=integration, event_type=EventType.STATUS_CHANGED).values_list(
            "changes", flat=True
        )
    )


def processed(client, sandbox, deal_id, stage: str | None = None, **event) -> InboundWebhook:
    """Move the deal to `stage` in Bitrix (if given), post its event, process it; the row as stored afterwards."""
    if stage:
        sandbox.store.update("deal", deal_id, {"STAGE_ID": stage})
    row = deal_event(client, deal_id, **event)
    inbound_process(inbound_id=row.pk)
    row.refresh_from_db()
    return row


def deal_reads(sandbox) -> list[dict]:
    """Requests that read deals: batch calls of crm.deal.get commands (or a single crm.deal.get)."""
    return [r for r in sandbox.requests if r["method"] == "crm.deal.get" or "=crm.deal.get" in r["params"]]


def deal_gets(sandbox) -> int:
    return len(deal_reads(sandbox))


@pytest.mark.django_db
def test_stage_change_in_bitrix_updates_order_and_emits_status_changed_for_n8n(client, sandbox, linked):
    order, deal_id, n8n = linked
    row = processed(client, sandbox, deal_id, "PREPARATION")
    order.refresh_from_db()
    assert (row.status, order.status) == (InboundStatus.PROCESSED, "confirmed")
    assert row.result["old"] == "new" and row.result["new"] == "confirmed" and row.result["attempts"] == 1
    assert row.processed_at is not None
    assert status_changes(n8n) == [{"status": ["new", "confirmed"]}]


@pytest.mark.django_db
def test_processing_twice_changes_nothing_more(client, sandbox, linked):
    order, deal_id, n8n = linked
    row = processed(client, sandbox, deal_id, "EXECUTING")
    assert row.status == InboundStatus.PROCESSED
    assert inbound_process(inbound_id=row.pk) == "skipped"
    assert deal_gets(sandbox) == 1 and len(status_changes(n8n)) == 1
    # The portal's log names the inbound row that asked (X-Request-Id), so every read is accounted for.
    assert [r["request_id"] for r in deal_reads(sandbox)] == [f"inbound:{row.pk}"]


@pytest.mark.django_db
def test_replayed_event_is_processed_once(client, sandbox, linked):
    order, deal_id, n8n = linked
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "WON"})
    first, second = deal_event(client, deal_id), deal_event(client, deal_id)
    assert second.status == InboundStatus.DUPLICATE and second.result == {"duplicate_of": first.pk}
    assert [inbound_process(inbound_id=r.pk) for r in (first, second)] == ["processed", "skipped"]
    assert deal_gets(sandbox) == 1 and status_changes(n8n) == [{"status": ["new", "done"]}]


@pytest.mark.django_db
def test_same_second_event_after_the_original_was_processed_is_pulled_again(client, sandbox, linked):
    """Two changes of one deal within a second share event+id+ts: the second must not be folded into a done pull."""
    order, deal_id, n8n = linked
    first = processed(client, sandbox, deal_id, "PREPARATION")
    assert first.status == InboundStatus.PROCESSED
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "EXECUTING"})  # a second change in the same second
    second = deal_event(client, deal_id)
    assert (second.status, second.result) == (InboundStatus.RECEIVED, {"repeat_of": first.pk})
    assert inbound_process(inbound_id=second.pk) == InboundStatus.PROCESSED
    order.refresh_from_db()
    assert order.status == "in_progress" and deal_gets(sandbox) == 2
    assert InboundWebhook.objects.get(pk=second.pk).result["repeat_of"] == first.pk


@pytest.mark.django_db
def test_echo_of_our_own_state_is_ignored_without_new_syncs(client, sandbox, linked):
    order, deal_id, n8n = linked
    syncs_before = IntegrationSync.objects.count()
    row = processed(client, sandbox, deal_id)  # deal is still NEW, the order is new: our own write coming back
    assert row.status == InboundStatus.IGNORED and row.result["echo"] is True
    assert IntegrationSync.objects.count() == syncs_before


@pytest.mark.django_db
def test_stale_echo_of_the_stage_we_last_wrote_does_not_revert_a_newer_local_change(client, sandbox, linked):
    order, deal_id, n8n = linked
    Order.objects.filter(pk=order.pk).update(status="in_progress")  # local change whose sync is still pending
    syncs_before = IntegrationSync.objects.count()
    row = processed(client, sandbox, deal_id)  # Bitrix still says NEW, which is what we last wrote
    order.refresh_from_db()
    assert row.status == InboundStatus.IGNORED and row.result["echo"] is True
    assert order.status == "in_progress" and IntegrationSync.objects.count() == syncs_before


@pytest.mark.django_db
def test_unknown_stage_is_ignored_and_recorded_never_guessed(client, sandbox, linked):
    order, deal_id, n8n = linked
    row = processed(client, sandbox, deal_id, "C3:FINAL_INVOICE")
    order.refresh_from_db()
    assert row.status == InboundStatus.IGNORED and order.status == "new"
    assert row.result["stage"] == "C3:FINAL_INVOICE" and "unknown stage" in row.result["reason"]


@pytest.mark.django_db
def test_deal_without_linked_order_is_ignored_without_calling_bitrix(client, sandbox, linked):
    row = processed(client, sandbox, 9999)
    assert row.status == InboundStatus.IGNORED and "no order is linked to deal 9999" in row.result["reason"]
    assert deal_gets(sandbox) == 0


@pytest.mark.django_db
def test_deal_deleted_in_bitrix_is_ignored(client, sandbox, linked):
    order, deal_id, n8n = linked
    sandbox.store.delete("deal", deal_id)
    row = processed(client, sandbox, deal_id)
    assert row.status == InboundStatus.IGNORED and "not found" in row.result["reason"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "event,reason",
    [("ONCRMCONTACTUPDATE", "contact changes are not pulled"), ("ONCRMDEALDELETE", "deal deletions are not pulled")],
)
def test_contact_and_delete_events_are_ignored(client, sandbox, linked, event, reason):
    row = processed(client, sandbox, 5, event=event)
    assert row.status == InboundStatus.IGNORED and row.result["reason"] == reason
    assert deal_gets(sandbox) == 0


@pytest.mark.django_db
def test_robot_call_for_a_deal_is_processed_like_an_event(client, sandbox, linked):
    order, deal_id, n8n = linked
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "LOSE"})
    body = urlencode(
        {"document_id[0]": "crm", "document_id[1]": "CCrmDocumentDeal", "document_id[2]": f"DEAL_{deal_id}"}
    )
    response = client.post('/bitrix/webhook?test="test2"&token=webhook-token-0001', body, content_type=FORM_TYPE)
    assert inbound_process(inbound_id=response.json()["id"]) == InboundStatus.PROCESSED
    order.refresh_from_db()
    assert order.status == "cancelled"


@pytest.mark.django_db
def test_bitrix_unreachable_fails_then_requeue_retries_up_to_the_cap(
    client, sandbox, linked, sent, django_capture_on_commit_callbacks
):
    order, deal_id, n8n = linked
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "PREPARATION"})
    row = deal_event(client, deal_id)
    sandbox.fail_next(1, "error_5xx")
    assert inbound_process(inbound_id=row.pk) == InboundStatus.FAILED
    row.refresh_from_db()
    assert row.result == {"attempts": 1, "retryable": True} and "crm.deal.get" in row.error
    assert services.inbound_requeue_stale() == []  # failed less than a minute ago: not yet
    InboundWebhook.objects.filter(pk=row.pk).update(processed_at=timezone.now() - timedelta(minutes=2))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.inbound_requeue_stale() == [row.pk]
    assert sent[-1] == row.pk
    assert inbound_process(inbound_id=row.pk) == InboundStatus.PROCESSED
    row.refresh_from_db()
    assert row.result["attempts"] == 2 and row.error == ""


@pytest.mark.django_db
def test_requeue_stops_at_the_attempt_cap(client, linked, sent):
    row = deal_event(client, linked[1])
    InboundWebhook.objects.filter(pk=row.pk).update(
        status=InboundStatus.FAILED,
        result={"attempts": services.MAX_ATTEMPTS, "retryable": True},
        processed_at=timezone.now() - timedelta(hours=1),
        received_at=timezone.now() - timedelta(hours=1),
    )
    assert services.inbound_requeue_stale() == []
    assert InboundWebhook.objects.get(pk=row.pk).status == InboundStatus.FAILED


@pytest.mark.django_db
def test_transport_failure_is_failed_and_retryable(client, linked, settings):
    Integration.objects.filter(kind=IntegrationKind.BITRIX24).update(endpoint="http://127.0.0.1:9/rest/1/code/")
    row = deal_event(client, linked[1])
    assert inbound_process(inbound_id=row.pk) == InboundStatus.FAILED
    row.refresh_from_db()
    assert row.result["retryable"] is True and "code" not in row.error.replace("crm.deal.get", "")


@pytest.mark.django_db
def test_requeue_sends_received_rows_older_than_a_minute_only(client, sent, django_capture_on_commit_callbacks):
    old = deal_event(client, 1, ts="1")
    new = deal_event(client, 2, ts="2")
    InboundWebhook.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.inbound_requeue_stale() == [old.pk]
    assert sent == [old.pk] and new.pk not in sent


@pytest.mark.django_db
def test_requeue_does_not_send_a_waiting_row_again_until_a_minute_has_passed(
    client, sent, django_capture_on_commit_callbacks
):
    """A backlog waiting in the queue must not grow it: one message per row per minute, not one per sweep."""
    old = deal_event(client, 1, ts="1")
    InboundWebhook.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.inbound_requeue_stale() == [old.pk]
        assert services.inbound_requeue_stale() == []  # the next sweep: its message is still on its way
    InboundWebhook.objects.filter(pk=old.pk).update(queued_at=timezone.now() - timedelta(minutes=2))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.inbound_requeue_stale() == [old.pk]  # lost after all: sent again
    assert sent == [old.pk, old.pk]


@pytest.mark.django_db
def test_requeue_sends_one_message_per_read_batch_of_rows(client, sent, django_capture_on_commit_callbacks):
    rows = [deal_event(client, 1, ts=str(i)) for i in range(120)]
    InboundWebhook.objects.update(received_at=timezone.now() - timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.inbound_requeue_stale() == [r.pk for r in rows]
    assert sent == [rows[0].pk, rows[50].pk, rows[100].pk]  # each message takes 50 waiting rows
    assert InboundWebhook.objects.filter(queued_at__isnull=False).count() == 120


@pytest.mark.django_db
def test_a_message_whose_row_is_done_still_takes_the_waiting_rows(client, sandbox, linked):
    order, deal_id, n8n = linked
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "PREPARATION"})
    done = processed(client, sandbox, deal_id)
    assert done.status == InboundStatus.PROCESSED
    waiting = deal_event(client, deal_id, ts="1700000999")
    assert waiting.status == InboundStatus.RECEIVED

    assert inbound_process(inbound_id=done.pk) == "skipped"  # a stale message for a done row

    waiting.refresh_from_db()
    assert waiting.status == InboundStatus.IGNORED and waiting.result["echo"] is True
    assert [r["request_id"] for r in deal_reads(sandbox)] == [f"inbound:{done.pk}", f"inbound:{waiting.pk}"]
    assert inbound_process(inbound_id=done.pk) == "skipped"  # and nothing left: no read
    assert len(deal_reads(sandbox)) == 2


def run_together(n: int, call) -> list:
    """Start `call` in n threads at once (each with its own DB connection); their results."""
    barrier, results = threading.Barrier(n), []

    def work():
        barrier.wait()
        try:
            results.append(call())
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_process_a_row_once(client, sandbox, linked):
    order, deal_id, n8n = linked
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "EXECUTING"})
    row = deal_event(client, deal_id)
    results = run_together(4, lambda: inbound_process(inbound_id=row.pk))
    assert sorted(results) == ["processed", "skipped", "skipped", "skipped"]
    assert deal_gets(sandbox) == 1 and len(status_changes(n8n)) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_events_store_one_accepted_and_the_rest_duplicates(sent):
    from django.test import Client

    form = urlencode(
        {"event": "ONCRMDEALUPDATE", "data[FIELDS][ID]": "5", "ts": "42", "auth[application_token]": APP_TOKEN}
    )
    answers = run_together(8, lambda: Client().post("/bitrix/webhook", form, content_type=FORM_TYPE).json()["status"])
    assert sorted(answers) == ["accepted"] + ["duplicate"] * 7
    assert InboundWebhook.objects.count() == 8
    original = InboundWebhook.objects.get(status=InboundStatus.RECEIVED)
    duplicates = InboundWebhook.objects.filter(status=InboundStatus.DUPLICATE).values_list("result", flat=True)
    assert all(result == {"duplicate_of": original.pk} for result in duplicates)
    assert sent == [original.pk]


@pytest.mark.django_db
def test_retries_back_off_doubling_per_attempt(client, linked, sent):
    row = deal_event(client, linked[1])
    failed_ago = {1: 61, 2: 119, 3: 241}  # due after 60 s, 120 s, 240 s
    for attempts, seconds in failed_ago.items():
        InboundWebhook.objects.filter(pk=row.pk).update(
            status=InboundStatus.FAILED,
            result={"attempts": attempts, "retryable": True},
            processed_at=timezone.now() - timedelta(seconds=seconds),
        )
        due = services.inbound_requeue_stale() == [row.pk]
        assert due == (attempts != 2), attempts


@pytest.mark.django_db
def test_rate_limited_processing_does_not_use_up_an_attempt(client, sandbox, linked):
    order, deal_id, n8n = linked
    sandbox.store.update("deal", deal_id, {"STAGE_ID": "PREPARATION"})
    row = deal_event(client, deal_id)
    sandbox.enforce_rate_limit = True
    sandbox.bucket = LeakyBucket(0.001, 0)  # the portal answers 503 QUERY_LIMIT_EXCEEDED
    assert inbound_process(inbound_id=row.pk) == InboundStatus.FAILED
    row.refresh_from_db()
    assert row.result == {"attempts": 0, "retryable": True} and "rate limited" in row.error
    sandbox.bucket = LeakyBucket(50, 50)
    InboundWebhook.objects.filter(pk=row.pk).update(status=InboundStatus.RECEIVED)
    assert inbound_process(inbound_id=row.pk) == InboundStatus.PROCESSED
    assert InboundWebhook.objects.get(pk=row.pk).result["attempts"] == 1


@pytest.mark.django_db
def test_a_backlog_of_calls_is_read_with_one_batch_call_and_applied_once_per_order(client, sandbox, sent):
    """Five waiting calls about three deals (echoes included): one request reads the three deals."""
    pairs = [link_order_to_deal(sandbox) if i == 0 else _link_another(sandbox) for i in range(3)]
    stages = ["PREPARATION", "EXECUTING", "NEW"]  # the third deal still shows what we wrote: an echo
    for (_, deal_id, _), stage in zip(pairs, stages, strict=True):
        sandbox.store.update("deal", deal_id, {"STAGE_ID": stage})
    rows = [deal_event(client, deal_id, ts=str(1700000100 + i)) for i, (_, deal_id, _) in enumerate(pairs)]
    rows += [deal_event(client, pairs[0][1], ts="1700000200"), deal_event(client, pairs[1][1], ts="1700000201")]
    assert all(r.status == InboundStatus.RECEIVED for r in rows)

    assert inbound_process(inbound_id=rows[2].pk) == InboundStatus.IGNORED  # the echo, named by its own message

    [read] = deal_reads(sandbox)
    assert read["method"] == "batch" and read["request_id"] == f"inbound:{rows[2].pk}"
    assert read["params"].count("crm.deal.get") == 3  # each deal once, however many calls name it
    stored = {r.pk: r for r in InboundWebhook.objects.filter(pk__in=[r.pk for r in rows])}
    assert [stored[r.pk].status for r in rows] == ["processed", "processed", "ignored", "ignored", "ignored"]
    assert all(stored[r.pk].result["processed_with"] == rows[2].pk for r in rows if r.pk != rows[2].pk)
    assert "processed_with" not in stored[rows[2].pk].result
    statuses = [Order.objects.get(pk=order.pk).status for order, _, _ in pairs]
    assert statuses == ["confirmed", "in_progress", "new"]
    n8n = pairs[0][2]
    assert sorted(map(str, status_changes(n8n))) == sorted(
        map(str, [{"status": ["new", "confirmed"]}, {"status": ["new", "in_progress"]}])
    )
    assert [inbound_process(inbound_id=r.pk) for r in rows] == ["skipped"] * 5  # their messages find nothing to do


@pytest.mark.django_db
def test_one_row_failing_in_a_batch_leaves_the_others_done(client, sandbox, sent, monkeypatch):
    from integrations.inbound import processing

    (good, good_deal, _), (bad, bad_deal, _) = link_order_to_deal(sandbox), _link_another(sandbox)
    gone = _link_another(sandbox)
    sandbox.store.update("deal", good_deal, {"STAGE_ID": "PREPARATION"})
    sandbox.store.update("deal", bad_deal, {"STAGE_ID": "PREPARATION"})
    sandbox.store.delete("deal", gone[1])
    real = processing.order_change_status

    def change(*, order, **kwargs):
        if order.pk == bad.pk:
            raise RuntimeError("disk full")
        return real(order=order, **kwargs)

    monkeypatch.setattr(processing, "order_change_status", change)
    rows = [deal_event(client, deal_id, ts=str(1700000300 + i)) for i, deal_id in enumerate([good_deal, bad_deal])]
    rows.append(deal_event(client, gone[1], ts="1700000302"))

    inbound_process(inbound_id=rows[0].pk)

    good_row, bad_row, gone_row = (InboundWebhook.objects.get(pk=r.pk) for r in rows)
    assert good_row.status == InboundStatus.PROCESSED and Order.objects.get(pk=good.pk).status == "confirmed"
    assert bad_row.status == InboundStatus.FAILED and bad_row.result["retryable"] is True
    assert "RuntimeError: disk full" in bad_row.error and Order.objects.get(pk=bad.pk).status == "new"
    assert gone_row.status == InboundStatus.IGNORED and "not found" in gone_row.result["reason"]
    assert len(deal_reads(sandbox)) == 1


def _link_another(box) -> tuple[Order, int, Integration]:
    """One more order linked to its own deal, on the integrations link_order_to_deal created."""
    order, deal_id = _order_with_deal(box, Integration.objects.get(kind=IntegrationKind.BITRIX24))
    return order, deal_id, Integration.objects.get(kind=IntegrationKind.N8N)
