"""Commands wait for the shared rate-limit bucket on a portal's QUERY_LIMIT_EXCEEDED instead of giving up."""

import pytest

from integrations.sandbox.bitrix24.faults import LeakyBucket
from integrations.tests import test_bitrix_commands as commands

run = commands.run
duplicated = commands.duplicated  # fixture: an order synced to a deal, plus one extra deal with its ORIGIN_ID

pytestmark = pytest.mark.django_db


def portal_full(sandbox) -> None:
    """The portal's own bucket is full (other clients used it): the next request is refused with 503, then it drains."""
    sandbox.enforce_rate_limit = True
    sandbox.bucket = LeakyBucket(rate=5, burst=1)
    sandbox.bucket.admit()


def test_duplicates_waits_for_the_bucket_after_one_query_limit_exceeded(bitrix_sandbox, duplicated):
    order, linked, extra = duplicated
    portal_full(bitrix_sandbox)

    out, err = run("bitrix_duplicates", "--order", str(order.pk), "--fix")

    assert bitrix_sandbox.stats["rate_limited"] >= 1
    assert "deleted" in out and err == ""
    assert int(linked) in bitrix_sandbox.deals and int(extra) not in bitrix_sandbox.deals


def test_a_portal_that_stays_over_its_limit_still_fails_clearly(bitrix_sandbox, duplicated):
    from django.core.management import CommandError

    bitrix_sandbox.enforce_rate_limit = True
    bitrix_sandbox.bucket = LeakyBucket(rate=0.001, burst=0)  # never admits
    with pytest.raises(CommandError, match="problem"):
        run("bitrix_duplicates")
    assert bitrix_sandbox.stats["rate_limited"] >= 2  # it waited and asked again before giving up


def test_the_client_asks_again_only_after_waiting_and_never_on_operation_time_limit(bitrix_sandbox):
    import time

    from integrations.clients.bitrix24 import BitrixClient

    waits, drains = [], []

    def acquire():  # the shared bucket's wait, as after a drain
        waits.append(1)
        time.sleep(0.25 if drains else 0.0)

    client = BitrixClient(bitrix_sandbox.webhook_url, acquire=acquire, on_rate_limited=lambda: drains.append(1))
    client.rate_limit_retries = 3
    portal_full(bitrix_sandbox)
    assert client.call("profile").ok and len(waits) == 2 and len(drains) == 1

    bitrix_sandbox.fail_next(1, "operation_limit")
    blocked = client.call("profile")
    assert blocked.error == "OPERATION_TIME_LIMIT" and len(waits) == 3  # not asked again: blocked for minutes

    portal_full(bitrix_sandbox)
    assert (
        BitrixClient(bitrix_sandbox.webhook_url, rate_limit_retries=3).call("profile").rate_limited
    )  # no wait, no retry
