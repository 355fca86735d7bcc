"""A token bucket per Bitrix portal, shared by every worker through Redis (in-process fallback without Redis)."""

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from integrations.errors import ConfigurationError

# KEYS[1] = bucket hash; ARGV = rate, burst, n, apply (1 = take tokens, 0 = only report, 'drain' = empty the bucket).
# Returns {seconds to wait, tokens left} as strings: Lua numbers would be truncated to integers in the reply.
# Redis TIME is the clock so that workers with skewed clocks still agree.
_LUA = """
local rate, burst, n, apply = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] ~= '0'
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(saved[1]), tonumber(saved[2])
if tokens == nil or ts == nil then tokens, ts = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if ARGV[4] == 'drain' then
  tokens = 0
elseif tokens >= n then
  if apply then tokens = tokens - n end
else
  wait = (n - tokens) / rate
end
if apply then
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
  -- An idle bucket refills completely, so forgetting it after that time changes nothing.
  redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
end
return {string.format('%.6f', wait), string.format('%.6f', tokens)}
"""

log = logging.getLogger("integrations.worker")
_local_lock = threading.Lock()
_local_buckets: dict[str, "_LocalState"] = {}  # shared by key so every bucket object for a portal agrees in-process


@dataclass
class _LocalState:
    tokens: float
    ts: float


def parse_rate(text: str) -> tuple[float, int]:
    """'2/50' -> (2.0 tokens per second, burst 50); anything else is a ConfigurationError that says what is expected."""
    rate_text, sep, burst_text = (text or "").strip().partition("/")
    try:
        rate, burst = float(rate_text), int(burst_text)
    except ValueError:
        rate, burst = 0.0, 0
    if not sep or not math.isfinite(rate) or rate <= 0 or burst < 1:
        raise ConfigurationError(
            f"rate limit must be '<requests per second>/<burst>' with a rate above 0 and a burst of at least 1, "
            f"e.g. '2/50'; got {text!r}"
        )
    return rate, burst


class TokenBucket:
    """burst tokens, refilled at rate per second; try_acquire is atomic across processes when Redis is given."""

    def __init__(self, key: str, rate: float, burst: int, redis_client: Any = None):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.key = f"ratelimit:{key}"
        self.rate = float(rate)
        self.burst = int(burst)
        self.redis = redis_client
        self._script = redis_client.register_script(_LUA) if redis_client is not None else None

    def try_acquire(self, n: int = 1) -> float:
        """Take n tokens: 0.0 when granted, otherwise the seconds until they would be available (nothing taken)."""
        if n > self.burst:
            raise ValueError(f"cannot take {n} tokens from a bucket of {self.burst}")
        return self._run(n, apply=True)[0]

    def acquire(self, timeout: float) -> bool:
        """Wait up to timeout seconds for one token; gives up at once when the wait cannot fit in the time left."""
        deadline = time.monotonic() + timeout
        while True:
            wait = self.try_acquire()
            if wait == 0.0:
                return True
            remaining = deadline - time.monotonic()
            if wait > remaining:
                return False
            time.sleep(min(wait, 0.25))

    def drain(self) -> None:
        """Empty the bucket: the portal said it is over its limit, so every process waits for the refill, not only
        the one that was told (our count and the portal's can differ: other clients share the portal's limit)."""
        if self._shared(1, "drain") is not None:
            return
        with _local_lock:
            _local_buckets[self.key] = _LocalState(0.0, time.monotonic())

    def state(self) -> dict[str, float | int]:
        """Current tokens (after refill) without taking any."""
        return {"tokens": self._run(1, apply=False)[1], "rate": self.rate, "burst": self.burst}

    def _run(self, n: int, apply: bool) -> tuple[float, float]:
        reply = self._shared(n, "1" if apply else "0")
        if reply is not None:
            wait, tokens = reply
            return float(wait), float(tokens)
        return self._run_local(n, apply)

    def _shared(self, n: int, mode: str) -> list | None:
        """The Lua script's reply, or None without Redis or while it is unreachable (the caller goes in-process)."""
        if self._script is None:
            return None
        try:
            return self._script(keys=[self.key], args=[self.rate, self.burst, n, mode])
        except Exception as exc:  # noqa: BLE001 - a Redis restart or outage must only slow us down, never fail a sync
            log.warning("[WORKER] rate-limit bucket: Redis unavailable (%s); in-process bucket", type(exc).__name__)
            return None

    def _run_local(self, n: int, apply: bool) -> tuple[float, float]:
        with _local_lock:
            now = time.monotonic()
            state = _local_buckets.setdefault(self.key, _LocalState(float(self.burst), now))
            tokens = min(self.burst, state.tokens + max(0.0, now - state.ts) * self.rate)
            wait = 0.0 if tokens >= n else (n - tokens) / self.rate
            if apply:
                state.tokens, state.ts = (tokens - n if wait == 0.0 else tokens), now
            return wait, tokens
