"""The sandbox n8n receiver: signature gate, dedupe by webhook-id, programmable answers over real HTTP."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import requests

from integrations.clients.http import TimeoutSession
from integrations.clients.n8n import N8nClient, generate_secret

SECRET = generate_secret()


@pytest.fixture
def settings():
    """Stands in for pytest-django's fixture, which the root conftest's autouse fixture asks for; no Django here."""
    return SimpleNamespace()


def _event(seq: int, object_id: int = 41, event_id: str | None = None) -> tuple[str, bytes]:
    event_id = event_id or f"evt_{object_id}_{seq}"
    body = {"id": event_id, "type": "order.updated", "sequence": seq, "object": {"type": "order", "id": object_id}}
    return event_id, json.dumps(body).encode()


@pytest.fixture
def receiver():
    from integrations.sandbox.n8n import N8nReceiver

    with N8nReceiver(SECRET) as r:
        yield r


@pytest.fixture
def client():
    return N8nClient(TimeoutSession(1, 2))


def _post(client, receiver, seq, object_id=41, secrets=None):
    event_id, body = _event(seq, object_id)
    return client.post_event(receiver.url, secrets=secrets or [SECRET], event_id=event_id, body=body)


def test_accepts_correctly_signed_post(receiver, client):
    assert _post(client, receiver, 1).status == 200
    (event,) = receiver.events
    assert event.signature_valid and event.webhook_id == "evt_41_1" and event.body["sequence"] == 1
    assert abs(event.webhook_timestamp - time.time()) < 5 and event.status == 200


def test_rejects_wrong_signature_with_401(receiver, client):
    result = _post(client, receiver, 1, secrets=[generate_secret()])
    assert result.status == 401
    assert receiver.events == [] and len(receiver.rejected) == 1
    assert receiver.rejected[0].signature_valid is False


def test_rejects_unsigned_post_with_401(receiver):
    assert requests.post(receiver.url, json={"a": 1}, timeout=2).status_code == 401


def test_accepts_either_secret_during_rotation(client):
    from integrations.sandbox.n8n import N8nReceiver

    old, new = generate_secret(), generate_secret()
    with N8nReceiver([new]) as receiver:
        assert _post(client, receiver, 1, secrets=[old, new]).ok
        assert _post(client, receiver, 2, secrets=[old]).status == 401


def test_dedupes_repeats_by_webhook_id(receiver, client):
    for _ in range(3):
        assert _post(client, receiver, 1).ok
    _post(client, receiver, 2)
    assert len(receiver.events) == 4 and receiver.duplicates == 2
    assert [e.body["sequence"] for e in receiver.unique_events()] == [1, 2]


def test_fails_sequence_2_three_times_then_accepts(receiver, client):
    receiver.respond_with(500, times=3, match=lambda e: e["sequence"] == 2)
    assert _post(client, receiver, 1).ok
    assert [_post(client, receiver, 2).status for _ in range(4)] == [500, 500, 500, 200]
    assert _post(client, receiver, 3).ok
    assert [e.body["sequence"] for e in receiver.events_for("order", 41)] == [1, 2, 3]
    assert len(receiver.requests) == 6 and receiver.duplicates == 0


def test_rules_are_checked_in_order_and_unmatched_get_default(receiver, client):
    receiver.respond_with(503, times=1, headers={"Retry-After": "7"})
    receiver.respond_with(429, match=lambda e: e["object"]["id"] == 99)
    first = _post(client, receiver, 1)
    assert first.status == 503 and first.headers["retry-after"] == "7"
    assert _post(client, receiver, 1, object_id=99).status == 429
    assert _post(client, receiver, 1).json() == {"ok": True}


def test_410_answer(receiver, client):
    receiver.respond_with(410)
    result = _post(client, receiver, 1)
    assert result.status == 410 and result.json() == {"ok": False}
    assert receiver.events == [] and receiver.requests[0].status == 410


def test_delay_slows_answers(receiver, client):
    receiver.set_delay(0.3)
    started = time.monotonic()
    assert _post(client, receiver, 1).ok
    assert time.monotonic() - started >= 0.3


def test_reset_clears_rules_delay_and_events(receiver, client):
    receiver.respond_with(500)
    _post(client, receiver, 1)
    receiver.set_delay(5)
    receiver.reset()
    assert receiver.requests == []
    assert _post(client, receiver, 1).ok and receiver.duplicates == 0


def test_http_programming_and_events_endpoints(receiver, client):
    base = receiver.url.rsplit("/webhook", 1)[0]
    answer = requests.post(
        f"{base}/sandbox/respond", json={"status": 500, "times": 1, "match": {"sequence": 2}}, timeout=2
    )
    assert answer.status_code == 200
    assert _post(client, receiver, 1).ok
    assert _post(client, receiver, 2).status == 500
    assert _post(client, receiver, 2).ok
    state = requests.get(f"{base}/sandbox/events", timeout=2).json()
    assert [e["body"]["sequence"] for e in state["events"]] == [1, 2]
    assert state["unique"] == 2 and len(state["requests"]) == 3
    summary = requests.get(f"{base}/sandbox/events?summary=1", timeout=2).json()
    assert summary == {"received": 3, "unique": 2, "duplicates": 0, "rejected": 0}
    assert requests.post(f"{base}/sandbox/respond", json={"times": 1}, timeout=2).status_code == 400


def test_events_for_filters_one_object_and_wait_for_polls(receiver, client):
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: _post(client, receiver, n % 3 + 1, object_id=n // 3), range(12)))
    assert receiver.wait_for(lambda r: len(r.unique_events()) == 12, timeout=2)
    assert receiver.wait_for(lambda: len(receiver.events_for("order", 2)) == 3, timeout=2)
    assert sorted(e.body["sequence"] for e in receiver.events_for("order", "2")) == [1, 2, 3]
    assert receiver.events_for("customer", 2) == []
    assert not receiver.wait_for(lambda: False, timeout=0.05)


def test_receiver_without_secret_accepts_unsigned(client):
    from integrations.sandbox.n8n import N8nReceiver

    with N8nReceiver() as receiver:
        assert requests.post(receiver.url, json={"a": 1}, timeout=2).status_code == 200
        assert receiver.events[0].signature_valid is None


def test_invalid_receiver_secret_fails_at_construction():
    from integrations.sandbox.n8n import N8nReceiver

    with pytest.raises(ValueError):
        N8nReceiver("not-a-secret")
