"""Standard Webhooks signing and delivery, checked against the independent `standardwebhooks` verifier."""

import base64
import json
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from integrations.clients.http import TimeoutSession
from integrations.clients.n8n import N8nClient, generate_secret, sign, signature_header, verify
from integrations.sandbox.n8n import N8nReceiver

BODY = json.dumps(
    {"id": "evt_1", "type": "order.updated", "sequence": 1, "object": {"type": "order", "id": 41}}
).encode()


@pytest.fixture
def settings():
    """Stands in for pytest-django's fixture, which the root conftest's autouse fixture asks for; no Django here."""
    return SimpleNamespace()


def _headers(secrets: list[str], body: bytes = BODY, msg_id: str = "evt_1", ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature_header(secrets, msg_id, ts, body),
    }


@pytest.fixture
def receiver():
    with N8nReceiver() as r:
        yield r


def test_generated_secret_has_prefix_and_32_bytes():
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) == 32
    assert generate_secret() != secret


def test_signature_verifies_with_reference_library():
    secret = generate_secret()
    assert Webhook(secret).verify(BODY, _headers([secret]))["sequence"] == 1


def test_sign_matches_reference_library_signature():
    secret, ts = generate_secret(), 1_700_000_000
    expected = Webhook(secret).sign("evt_1", datetime.fromtimestamp(ts, tz=UTC), BODY.decode())
    assert sign(secret, "evt_1", ts, BODY) == expected


def test_two_secrets_give_two_signatures_each_verifying():
    old, new = generate_secret(), generate_secret()
    headers = _headers([old, new])
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    assert verify([old], headers, BODY) and verify([new], headers, BODY)


def test_tampered_body_fails_verification():
    secret = generate_secret()
    headers = _headers([secret])
    tampered = BODY.replace(b'"sequence": 1', b'"sequence": 2')
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, headers)
    assert not verify([secret], headers, tampered)


def test_verify_rejects_wrong_secret_stale_timestamp_and_missing_headers():
    secret = generate_secret()
    assert not verify([generate_secret()], _headers([secret]), BODY)
    stale = _headers([secret], ts=int(time.time()) - 301)
    assert not verify([secret], stale, BODY)
    assert verify([secret], stale, BODY, tolerance=600)
    assert verify([secret], stale, BODY, now=int(time.time()) - 300)
    assert not verify([secret], {"webhook-id": "evt_1"}, BODY)
    assert not verify([secret], {**_headers([secret]), "webhook-signature": "v1,not-base64!"}, BODY)


@pytest.mark.parametrize(
    "secret",
    ["", "abc", "whsec_", "whsec_***not base64***", "whsec_" + "QUJD", "sk_" + "A" * 44, "whsec_" + "A" * 120],
)
def test_invalid_secret_format_raises_value_error(secret):
    with pytest.raises(ValueError) as info:
        sign(secret, "evt_1", 1, BODY)
    if len(secret) > 6:
        assert secret[6:] not in str(info.value)  # error text never quotes the secret


def test_unpadded_secret_is_accepted():
    secret = generate_secret()
    assert sign(secret.rstrip("="), "evt_1", 1, BODY) == sign(secret, "evt_1", 1, BODY)


def test_post_event_sends_signed_headers(receiver):
    secret = generate_secret()
    result = N8nClient().post_event(receiver.url, secrets=[secret], event_id="evt_1", body=BODY)
    assert result.ok and result.json() == {"ok": True}
    (event,) = receiver.events
    headers = event.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "shop-sync/1"
    assert headers["webhook-id"] == "evt_1"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert Webhook(secret).verify(BODY, headers)["object"] == {"type": "order", "id": 41}
    assert event.body["sequence"] == 1


def test_post_event_uses_given_timestamp(receiver):
    secret = generate_secret()
    N8nClient().post_event(receiver.url, secrets=[secret], event_id="evt_1", body=BODY, timestamp=1_700_000_000)
    headers = receiver.events[0].headers
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"] == sign(secret, "evt_1", 1_700_000_000, BODY)


def test_read_timeout_returns_result_without_status(receiver):
    receiver.set_delay(1.0)
    client = N8nClient(TimeoutSession(1, 0.2))
    result = client.post_event(receiver.url, secrets=[generate_secret()], event_id="evt_1", body=BODY)
    assert result.status is None and not result.ok
    assert result.error_class == "ReadTimeout" and result.maybe_applied


def test_connection_refused_returns_result_without_status():
    receiver = N8nReceiver().start()
    url = receiver.url
    receiver.stop()
    result = N8nClient().post_event(url, secrets=[generate_secret()], event_id="evt_1", body=BODY)
    assert result.status is None and result.error_class == "ConnectionError" and not result.maybe_applied


def test_http_error_status_is_returned_not_raised(receiver):
    receiver.respond_with(500)
    result = N8nClient().post_event(receiver.url, secrets=[generate_secret()], event_id="evt_1", body=BODY)
    assert result.status == 500 and not result.ok


def test_one_session_reuses_one_keep_alive_connection_and_stop_cuts_it(receiver):
    client = N8nClient()
    for n in range(3):
        assert client.post_event(receiver.url, secrets=[generate_secret()], event_id=f"evt_{n}", body=BODY).ok
    assert len(receiver.events) == 3
    assert len(receiver._server.connections) == 1  # the three POSTs shared one connection
    url = receiver.url
    receiver.stop()
    # The pooled connection was cut: the next POST is refused, not answered by the stopped receiver's thread.
    result = client.post_event(url, secrets=[generate_secret()], event_id="evt_late", body=BODY)
    assert result.status is None and len(receiver.events) == 3


def _clear_proxy_env(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_proxy_from_environment_is_used_and_no_proxy_respected(receiver, monkeypatch):
    _clear_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", receiver.base_url)  # the receiver plays the proxy: it records the POST
    target = "http://shop-flows.invalid/webhook/shop"  # never resolved: the proxy gets the request
    assert N8nClient().post_event(target, secrets=[generate_secret()], event_id="evt_1", body=BODY).ok
    assert [e.webhook_id for e in receiver.events] == ["evt_1"]
    monkeypatch.setenv("NO_PROXY", "shop-flows.invalid")
    result = N8nClient().post_event(target, secrets=[generate_secret()], event_id="evt_2", body=BODY)
    assert result.status is None and len(receiver.events) == 1  # direct, and the name does not resolve


def test_netrc_credentials_are_never_added(receiver, monkeypatch, tmp_path):
    _clear_proxy_env(monkeypatch)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert N8nClient().post_event(receiver.url, secrets=[generate_secret()], event_id="evt_1", body=BODY).ok
    assert "authorization" not in receiver.events[0].headers
