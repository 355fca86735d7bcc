"""BackgroundSender (broker messages from a daemon thread) and the inbound gate using it."""

import os
import threading
import time

import pytest

from integrations.background import BackgroundSender
from integrations.models import InboundStatus, InboundWebhook
from integrations.tests.test_inbound_processing import _link_another, deal_event, link_order_to_deal


@pytest.fixture
def settings():
    """pytest-django's fixture is asked for by the root conftest's autouse fixture; the unit tests need no Django."""
    from types import SimpleNamespace

    return SimpleNamespace()


def test_ids_sent_meanwhile_leave_together_and_every_id_leaves_once():
    batches: list[list[int]] = []
    sender = BackgroundSender("test-sender", batches.append, max_batch=40, linger=0.2)
    sender.submit([1])
    sender.submit(list(range(2, 101)))  # within the first id's linger
    assert sender.flush(5)
    assert sorted(i for batch in batches for i in batch) == list(range(1, 101))
    assert len(batches) == 3 and max(map(len, batches)) == 40  # 100 ids, 40 at most per send


def test_the_caller_does_not_wait_for_a_slow_send():
    release = threading.Event()
    sent: list[int] = []
    sender = BackgroundSender("test-slow", lambda ids: (release.wait(5), sent.extend(ids)))
    started = time.monotonic()
    sender.submit([7])
    assert time.monotonic() - started < 0.5 and not sent
    assert not sender.flush(0.1)  # still in `send`
    release.set()
    assert sender.flush(5) and sent == [7]


def test_a_coalescing_sender_queues_a_waiting_id_once_and_an_id_taken_for_a_send_again():
    release, entered = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def send(ids):
        entered.set()
        release.wait(5)
        batches.append(ids)

    sender = BackgroundSender("test-coalesce", send, coalesce=True)
    sender.submit([1])
    assert entered.wait(5)  # [1] is being sent: a 1 submitted now may follow a change that send did not see
    sender.submit([2, 1])
    sender.submit([1, 2, 2])
    sender.submit([3])
    release.set()
    assert sender.flush(5)
    assert batches == [[1], [2, 1, 3]]


def test_a_failing_send_is_logged_and_the_thread_goes_on(caplog):
    calls: list[list[int]] = []

    def send(ids):
        calls.append(ids)
        if len(calls) == 1:
            raise ConnectionError("broker down")

    sender = BackgroundSender("test-failing", send)
    sender.submit([1])
    assert sender.flush(5)
    sender.submit([2])
    assert sender.flush(5)
    assert calls == [[1], [2]]
    assert "1 ids not sent; the sweep will find them" in caplog.text


def test_a_forked_child_sends_through_a_thread_of_its_own():
    read_end, write_end = os.pipe()
    sender = BackgroundSender("test-fork", lambda ids: os.write(write_end, f"{os.getpid()}:{ids}\n".encode()))
    sender.submit([1])  # the parent's thread exists before the fork
    assert sender.flush(5)
    pid = os.fork()
    if pid == 0:  # child: no copy of the parent's thread runs here; submit must start one
        try:
            sender.submit([2])
            os._exit(0 if sender.flush(5) else 1)
        except BaseException:  # noqa: BLE001 - never return into pytest in the child
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    os.close(write_end)
    with os.fdopen(read_end) as lines:
        out = lines.read().splitlines()
    assert os.waitstatus_to_exitcode(status) == 0
    assert out == [f"{os.getpid()}:[1]", f"{pid}:[2]"]


@pytest.mark.django_db(transaction=True)
def test_gate_answers_then_a_background_message_per_read_batch_gets_every_call_processed(client, monkeypatch):
    """120 calls stored by the gate leave as a few messages, and processing those messages handles all 120."""
    from django.conf import settings as django_settings

    from integrations.inbound import services
    from integrations.inbound.processing import inbound_process
    from integrations.sandbox.bitrix24 import BitrixSandbox
    from integrations.tasks import process_inbound

    messages: list[int] = []
    monkeypatch.setattr(process_inbound, "apply_async", lambda args, **kw: messages.append(args[0]))
    monkeypatch.setattr(django_settings, "INBOUND_ENQUEUE_IN_BACKGROUND", True)
    monkeypatch.setattr(django_settings, "BITRIX_WEBHOOK_TOKEN", "webhook-token-0001")
    monkeypatch.setattr(django_settings, "BITRIX_APPLICATION_TOKEN", "app-token-for-tests-0001")
    box = BitrixSandbox(enforce_rate_limit=False).start()
    try:
        pairs = [link_order_to_deal(box)] + [_link_another(box) for _ in range(2)]
        rows = [deal_event(client, pairs[i % 3][1], ts=str(1700001000 + i)) for i in range(120)]
        assert {r.status for r in rows} == {InboundStatus.RECEIVED}
        assert services._sender.flush(5)
        assert 3 <= len(messages) < len(rows)  # one per 50 calls of each batch the thread sent, not one per call
        for inbound_id in messages:
            inbound_process(inbound_id=inbound_id)
    finally:
        box.stop()
    left = InboundWebhook.objects.filter(pk__in=[r.pk for r in rows], status=InboundStatus.RECEIVED).count()
    assert left == 0
