"""Runtime-switchable fault injection and the portal's leaky-bucket request limiter."""

import random
import threading
import time
from collections import deque
from typing import Any

FAULT_KINDS = ("error_5xx", "timeout", "lost_response", "operation_limit", "slow")
DEFAULT_TIMEOUT_SECONDS = 70.0  # longer than the client's 65 s read timeout
DEFAULT_SLOW_SECONDS = 1.0


class FaultInjector:
    """Decides per request whether (and how) to misbehave: forced kinds from fail_next first, then probabilities."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._rates = dict.fromkeys(FAULT_KINDS, 0.0)
            self._forced: deque[str] = deque()
            self._rng = random.Random()
            self.timeout_seconds = DEFAULT_TIMEOUT_SECONDS
            self.slow_seconds = DEFAULT_SLOW_SECONDS

    def configure(
        self,
        error_5xx: float = 0.0,
        timeout: float = 0.0,
        lost_response: float = 0.0,
        operation_limit: float = 0.0,
        seed: int | None = None,
        timeout_seconds: float | None = None,
        slow: float = 0.0,
        slow_seconds: float | None = None,
    ) -> None:
        """Replace all probabilities (0..1 each, drawn once per request); seed makes the sequence repeatable.
        A 'slow' request is held slow_seconds, then applied and answered (a busy portal: the write lands late)."""
        rates = {"error_5xx": error_5xx, "timeout": timeout, "lost_response": lost_response}
        rates["operation_limit"], rates["slow"] = operation_limit, slow
        if any(not 0.0 <= float(v) <= 1.0 for v in rates.values()) or sum(map(float, rates.values())) > 1.0:
            raise ValueError("fault probabilities must be within 0..1 and sum to at most 1")
        with self._lock:
            self._rates = {k: float(v) for k, v in rates.items()}
            if seed is not None:
                self._rng = random.Random(seed)
            if timeout_seconds is not None:
                self.timeout_seconds = float(timeout_seconds)
            if slow_seconds is not None:
                self.slow_seconds = float(slow_seconds)

    def fail_next(self, n: int, kind: str) -> None:
        """Force the next n portal requests to fail with kind."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        with self._lock:
            self._forced.extend([kind] * n)

    def draw(self) -> str:
        """The fault for this request, or ''."""
        with self._lock:
            if self._forced:
                return self._forced.popleft()
            roll, edge = self._rng.random(), 0.0
            for kind in FAULT_KINDS:
                edge += self._rates[kind]
                if roll < edge:
                    return kind
            return ""

    def settings(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self._rates,
                "timeout_seconds": self.timeout_seconds,
                "slow_seconds": self.slow_seconds,
                "forced": list(self._forced),
            }


class LeakyBucket:
    """Each request adds 1 to the level, which drains at `rate`/s; a request that would exceed `burst` is refused."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._level, self._at = 0.0, time.monotonic()

    def admit(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._level = max(0.0, self._level - (now - self._at) * self.rate)
            self._at = now
            if self._level + 1 > self.burst:
                return False
            self._level += 1
            return True
