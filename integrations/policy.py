"""Retry policy, pure: which outcomes retry, which are final, and how long to wait."""

import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from enum import StrEnum

BASE_DELAY_SECONDS = 5.0
MAX_DELAY_SECONDS = 6 * 3600.0
# Bitrix24's "over the limit" error codes (the only set: the client's `rate_limited` uses it too).
RATE_LIMIT_ERRORS = frozenset({"QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT"})


class Verdict(StrEnum):
    OK = "ok"
    RETRYABLE = "retryable"  # timeouts before sending, connection refused, 5xx, 429/503
    TERMINAL = "terminal"  # other 4xx, validation: retrying cannot help
    UNKNOWN = "unknown"  # may have been applied (read timeout, reset): look up before re-creating
    DEFERRED = "deferred"  # not an attempt: rate limited by us or the remote, or waiting for a dependency


def classify_http(status: int | None, *, maybe_applied: bool = False, error_code: str = "") -> Verdict:
    """Map an HTTP exchange to a verdict."""
    if error_code in RATE_LIMIT_ERRORS:
        return Verdict.DEFERRED
    if status is None:
        return Verdict.UNKNOWN if maybe_applied else Verdict.RETRYABLE
    if 200 <= status < 300:
        return Verdict.OK
    if status in (429, 503):
        return Verdict.DEFERRED if error_code else Verdict.RETRYABLE
    if status in (408, 425) or status >= 500:
        return Verdict.RETRYABLE
    return Verdict.TERMINAL


def backoff_seconds(
    attempt: int,
    *,
    retry_after: float | None = None,
    base: float = BASE_DELAY_SECONDS,
    cap: float = MAX_DELAY_SECONDS,
    rand: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with full jitter; a server's Retry-After is a floor."""
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    delay = rand() * ceiling
    if retry_after is not None:
        delay = max(delay, min(float(retry_after), cap))
    return delay


def is_exhausted(attempts: int, max_attempts: int) -> bool:
    return attempts >= max_attempts


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (seconds from `now`, a Unix time); None when
    absent or unreadable. The one parser, for every target."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


# A delivery round sends a request only while its lease outlasts the request's worst case by this share of the lease
# (slack for the guard's own query, clock rates and a server still finishing a request the client gave up on).
LEASE_MARGIN_SHARE = 0.1


def lease_margin(lease_seconds: float) -> float:
    return lease_seconds * LEASE_MARGIN_SHARE


def lease_too_short(lease_seconds: float, worst_calls: dict[str, float]) -> str:
    """Why a lease cannot cover one call of each kind (connect + read timeout, plus the margin); '' when it can."""
    for name, seconds in worst_calls.items():
        if seconds + lease_margin(lease_seconds) > lease_seconds:
            return (
                f"SYNC_LEASE_SECONDS={lease_seconds:g} is too short for {name} (a call may take {seconds:g} s): it "
                f"must be at least {seconds / (1 - LEASE_MARGIN_SHARE):.1f} s, or the timeouts shorter"
            )
    return ""
