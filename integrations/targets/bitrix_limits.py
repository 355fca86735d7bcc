"""The Bitrix24 rate limit (one token bucket per portal in Redis, shared by every process) and the client behind it."""

import hashlib
import logging
from urllib.parse import urlsplit

from django.conf import settings

from integrations.clients.bitrix24 import BitrixClient
from integrations.clients.http import TimeoutSession
from integrations.models import Integration
from integrations.ratelimit import TokenBucket, parse_rate

log = logging.getLogger("integrations.worker")
WAIT_LIMIT_SECONDS = 10.0
# Commands and reconciliation ask again after a QUERY_LIMIT_EXCEEDED, each time once the shared bucket has refilled.
COMMAND_RATE_LIMIT_RETRIES = 5
_redis = None


class RateLimitTimeout(Exception):
    def __init__(self, wait: float):
        super().__init__(f"rate limit: no token within {WAIT_LIMIT_SECONDS:.0f}s")
        self.wait = wait


def portal_key(endpoint: str) -> str:
    """One bucket per portal host (the real limit is per portal), without the secret code in the key."""
    host = urlsplit(endpoint).netloc or endpoint
    return "bitrix-bucket:" + hashlib.sha256(host.encode()).hexdigest()[:16]


def bucket_for(integration: Integration) -> TokenBucket:
    rate, burst = parse_rate(integration.rate_limit or settings.BITRIX_RATE_LIMIT)
    return TokenBucket(portal_key(integration.endpoint), rate, burst, redis_client=_redis_client())


def _limiter_for(integration: Integration, bucket: TokenBucket | None = None):
    bucket = bucket or bucket_for(integration)

    def acquire() -> None:
        if not bucket.acquire(timeout=WAIT_LIMIT_SECONDS):
            raise RateLimitTimeout(wait=1.0)

    return acquire


def call_worst_case() -> float:
    """The longest one portal request can take once its rate-limit token is taken: connect + read timeout."""
    return float(sum(settings.BITRIX_TIMEOUT))


def bitrix_client_for(
    integration: Integration, *, request_id: str = "", wait_on_rate_limit: bool = False
) -> BitrixClient:
    """The one way production code talks to a portal: BITRIX_TIMEOUT on every request, the shared bucket before it,
    and the bucket emptied when the portal answers that it is over its limit. With wait_on_rate_limit (commands,
    reconciliation: nothing to defer to) such an answer is followed by a wait for the bucket and a new try."""
    connect, read = settings.BITRIX_TIMEOUT
    bucket = bucket_for(integration)
    return BitrixClient(
        integration.endpoint,
        session=TimeoutSession(connect, read),
        acquire=_limiter_for(integration, bucket),
        request_id=request_id,
        on_rate_limited=bucket.drain,
        rate_limit_retries=COMMAND_RATE_LIMIT_RETRIES if wait_on_rate_limit else 0,
    )


def _redis_client():
    global _redis
    if _redis is None:
        import redis

        try:
            client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
            client.ping()
            _redis = client
        except Exception:  # noqa: BLE001 - no Redis: an in-process bucket still keeps this process under the limit
            log.warning("[WORKER] Redis unreachable: using an in-process rate-limit bucket")
            return None
    return _redis
