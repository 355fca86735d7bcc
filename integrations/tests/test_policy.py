"""integrations.policy alone: pure functions, no database, no HTTP."""

import pytest
from django.conf import settings

from integrations import policy
from integrations.policy import Verdict


@pytest.mark.parametrize(
    ("status", "maybe_applied", "code", "verdict"),
    [
        (200, False, "", Verdict.OK),
        (204, False, "", Verdict.OK),
        (400, False, "", Verdict.TERMINAL),
        (401, False, "", Verdict.TERMINAL),
        (404, False, "", Verdict.TERMINAL),
        (408, False, "", Verdict.RETRYABLE),
        (429, False, "", Verdict.RETRYABLE),
        (500, False, "", Verdict.RETRYABLE),
        (503, False, "", Verdict.RETRYABLE),
        (503, False, "QUERY_LIMIT_EXCEEDED", Verdict.DEFERRED),
        (429, False, "OPERATION_TIME_LIMIT", Verdict.DEFERRED),
        (None, False, "", Verdict.RETRYABLE),  # never reached the server
        (None, True, "", Verdict.UNKNOWN),  # may have been applied: look up before re-creating
    ],
)
def test_outcomes_are_classified(status, maybe_applied, code, verdict):
    assert policy.classify_http(status, maybe_applied=maybe_applied, error_code=code) == verdict


def test_backoff_ceiling_doubles_and_is_capped():
    ceilings = [policy.backoff_seconds(n, rand=lambda: 1.0) for n in range(1, 16)]
    assert ceilings[:4] == [5.0, 10.0, 20.0, 40.0]
    assert max(ceilings) == policy.MAX_DELAY_SECONDS == ceilings[-1]


def test_backoff_is_full_jitter_between_zero_and_the_ceiling():
    assert policy.backoff_seconds(3, rand=lambda: 0.0) == 0.0
    delays = {policy.backoff_seconds(5) for _ in range(200)}
    assert len(delays) > 100 and all(0.0 <= d <= 80.0 for d in delays)


def test_retry_after_is_a_floor_but_capped():
    assert policy.backoff_seconds(1, retry_after=30, rand=lambda: 0.0) == 30
    assert policy.backoff_seconds(1, retry_after=10**9, rand=lambda: 0.0) == policy.MAX_DELAY_SECONDS


def test_default_attempt_budget_retries_for_about_a_day():
    """A portal outage of several hours must not kill syncs: the default budget retries for ~24 h on average."""
    attempts = settings.SYNC_MAX_ATTEMPTS
    expected = sum(policy.backoff_seconds(n, rand=lambda: 0.5) for n in range(1, attempts))
    assert 20 * 3600 <= expected <= 30 * 3600, expected / 3600
    assert policy.is_exhausted(attempts, attempts) and not policy.is_exhausted(attempts - 1, attempts)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("0", 0.0),
        ("-3", 0.0),
        ("", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),  # an HTTP date, 30 s after `now`
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # already past
    ],
)
def test_retry_after_header_parsing(header, seconds):
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert policy.parse_retry_after(header, now=now) == seconds
