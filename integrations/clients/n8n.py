"""Standard Webhooks signing, verification and delivery for n8n endpoints."""

import base64
import binascii
import hashlib
import hmac
import secrets as _random
import time
from collections.abc import Mapping

import requests

from integrations.clients.http import HttpResult, TimeoutSession, send
from integrations.errors import ConfigurationError

SECRET_PREFIX = "whsec_"
# The spec allows 24-64 random bytes; shorter keys are too weak, longer ones are a sign of a pasted wrong value.
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64
DEFAULT_TOLERANCE = 300
USER_AGENT = "shop-sync/1"


def generate_secret() -> str:
    """Return a new signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(32)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """Decode a `whsec_…` secret into HMAC key bytes; messages never quote the secret itself."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ConfigurationError("Webhook secret must be a string starting with 'whsec_'.")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        # Unpadded base64 is common in copied secrets, so padding is restored before strict decoding.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("Webhook secret after 'whsec_' is not valid base64.") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ConfigurationError(
            f"Webhook secret must decode to {MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes, got {len(key)}."
        )
    return key


_key = decode_secret  # the sandbox's name for it


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return `v1,<base64 HMAC-SHA256>` of `"{msg_id}.{timestamp}." + body`."""
    return "v1," + base64.b64encode(_digest(_key(secret), msg_id, int(timestamp), body)).decode("ascii")


def signature_header(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the `webhook-signature` value: one signature per secret, space-separated (secret rotation)."""
    if not secrets:
        raise ValueError("At least one webhook secret is required to sign.")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def verify(
    secrets: list[str],
    headers: Mapping[str, str],
    body: bytes,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True when the timestamp is within tolerance and any v1 signature matches any secret."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (lowered.get(h, "") for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures):
        return False
    try:
        timestamp = int(stamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = [_digest(_key(secret), msg_id, timestamp, body) for secret in secrets]
    for candidate in signatures.split():
        version, _, encoded = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if any(hmac.compare_digest(given, digest) for digest in expected):
            return True
    return False


class N8nClient:
    """Delivers signed events to n8n webhook URLs; transport problems come back as HttpResult, never as exceptions."""

    def __init__(self, session: requests.Session | None = None):
        self.session = session or TimeoutSession(5, 15)

    def post_event(
        self,
        url: str,
        *,
        secrets: list[str],
        event_id: str,
        body: bytes,
        timestamp: int | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> HttpResult:
        """POST body signed for event_id; a fresh timestamp per attempt keeps retries inside receivers' tolerance.
        timeout: (connect, read) seconds, else the session's."""
        timestamp = int(time.time()) if timestamp is None else int(timestamp)
        headers = {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, event_id, timestamp, body),
            "user-agent": USER_AGENT,
        }
        return send(self.session, "POST", url, data=body, headers=headers, timeout=timeout)
