"""Catch-up against BitrixSandbox(rate=2, burst=50, enforced): portal calls per hour when nothing changes (vs listing
every deal of ours each period, what a cursor-less poll costs), and the lag of stage changes made while the portal
posts no events, with deliveries using 80 % of the shared rate limit meanwhile.

The lag run scales the period down (5 s instead of 5 min) and the overlap with it, but not the portal's limit: one
catch-up call per run is then 0.2 calls/s instead of 0.003, so deliveries may take only 80 % of the 2/s here (at the
real period catch-up would fit in 1 % of spare capacity)."""

import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bench.report import Result, percentile

RATE, BURST = 2, 50
PERIOD_SECONDS = 300  # the beat schedule's period (app.celery.BEAT_SCHEDULE)
LAG_PERIOD_SECONDS = 5.0  # the lag run is scaled down: one catch-up run every 5 s instead of 5 min
LAG_OVERLAP_SECONDS = 5  # and BITRIX_CATCHUP_OVERLAP_SECONDS with it (120 s at the real period)
LOAD_SHARE = 0.8


def _setup(sandbox, n: int):
    """n orders, each linked to a deal of ours in the sandbox; the bitrix integration."""
    from django.conf import settings
    from django.contrib.contenttypes.models import ContentType

    from bench.django_setup import make_user
    from integrations.models import ExternalLink, Integration, IntegrationKind
    from orders import services as orders
    from orders.models import Order

    bitrix = Integration.objects.create(
        kind=IntegrationKind.BITRIX24, name="bitrix", endpoint=sandbox.webhook_url, rate_limit=f"{RATE}/{BURST}"
    )
    Integration.objects.filter(pk=bitrix.pk).update(enabled=False)  # no delivery rows for the orders made below
    user, pairs = make_user(0, "catchup"), []
    order_ct = ContentType.objects.get_for_model(Order)
    for i in range(n):
        order = orders.order_create(user=user, title=f"c{i}", amount=Decimal("10.00"))
        deal_id = sandbox.store.add(
            "deal", {"STAGE_ID": "NEW", "ORIGINATOR_ID": settings.BITRIX_ORIGINATOR_ID, "ORIGIN_ID": order.pk}
        )
        ExternalLink.objects.create(
            integration=bitrix, content_type=order_ct, object_id=str(order.pk), remote_id=str(deal_id)
        )
        pairs.append((order.pk, deal_id))
    Integration.objects.filter(pk=bitrix.pk).update(enabled=True)
    bitrix.refresh_from_db()
    return bitrix, pairs


def _age_deals(sandbox, hours: float) -> None:
    """Every deal last modified `hours` ago (the sandbox stamps now on every write; a quiet portal's deals are old)."""
    old = (datetime.now(UTC) - timedelta(hours=hours)).astimezone().isoformat(timespec="seconds")
    with sandbox.store._lock:
        for row in sandbox.store._tables["deal"].rows.values():
            row["DATE_MODIFY"] = old


def _quiet_cost(ctx) -> list[Result]:
    from integrations.inbound.catchup import catchup_rewind, catchup_run
    from integrations.sandbox.bitrix24 import BitrixSandbox

    n, runs = ctx.size(120, 1000), ctx.size(5, 20)
    with BitrixSandbox(rate=RATE, burst=BURST) as sandbox:
        bitrix, _ = _setup(sandbox, n)
        _age_deals(sandbox, 3)
        catchup_rewind(integration=bitrix, since=datetime.now(UTC) - timedelta(minutes=10))
        before = len(sandbox.requests)
        results = [catchup_run(integration=bitrix) for _ in range(runs)]
        calls = len(sandbox.requests) - before
        # What a poll without a cursor costs: every deal of ours, one page of 50 per call, each period.
        full_pages = -(-n // 50)
    per_run = calls / runs
    per_hour, baseline = per_run * 3600 / PERIOD_SECONDS, full_pages * 3600 / PERIOD_SECONDS
    outcomes = {r.outcome for r in results}
    ctx.detail(
        "catchup (quiet portal)",
        f"{n} deals of ours, none modified in the last 3 h; {runs} catch-up runs back to back: {calls} crm.deal.list "
        f"calls ({per_run:.2f} per run), outcomes {sorted(outcomes)}. At one run per {PERIOD_SECONDS} s that is "
        f"{per_hour:.0f} calls/h. Baseline: listing all {n} deals each period ({full_pages} pages per run).",
    )
    return [
        Result(
            metric=f"catch-up calls/hour, nothing changes ({n} deals)",
            baseline=baseline,
            ours=per_hour,
            unit="calls/h",
            target="≤ 12/h (1 per run)",
            passed=per_hour <= 12 and outcomes == {"complete"},
            note=f"one run per {PERIOD_SECONDS} s; baseline = a cursor-less poll listing every deal of ours.",
        )
    ]


def _lag_under_load(ctx) -> list[Result]:
    from django.db import connection
    from django.test import override_settings

    from integrations.inbound.catchup import catchup_run
    from integrations.models import InboundWebhook
    from integrations.sandbox.bitrix24 import BitrixSandbox
    from integrations.targets.bitrix_limits import bitrix_client_for

    n, seconds = ctx.size(10, 100), ctx.size(8.0, 40.0)
    with BitrixSandbox(rate=RATE, burst=BURST) as sandbox:
        sandbox.pause_events()  # only catch-up can see the changes
        bitrix, pairs = _setup(sandbox, n)
        catchup_run(integration=bitrix)  # the cursor starts now
        stop, load_calls = threading.Event(), [0]

        def deliveries() -> None:
            """A steady 90 % of the rate through the shared bucket, as deliveries would take it."""
            client = bitrix_client_for(bitrix, request_id="load")
            while not stop.is_set():
                t0 = time.monotonic()
                client.call("profile")
                load_calls[0] += 1
                stop.wait(max(0.0, 1 / (RATE * LOAD_SHARE) - (time.monotonic() - t0)))

        def catchups() -> None:
            while not stop.is_set():
                catchup_run(integration=bitrix)
                stop.wait(LAG_PERIOD_SECONDS)
            connection.close()

        scaled = override_settings(BITRIX_CATCHUP_OVERLAP_SECONDS=LAG_OVERLAP_SECONDS)
        scaled.enable()
        threads = [threading.Thread(target=deliveries), threading.Thread(target=catchups)]
        for thread in threads:
            thread.start()
        changed: dict[int, float] = {}  # order pk -> when its deal was moved in Bitrix24
        started = time.time()
        for i, (order_pk, deal_id) in enumerate(pairs):  # changes spread over the run
            time.sleep(max(0.0, started + i * seconds / n - time.time()))
            sandbox.store.update("deal", deal_id, {"STAGE_ID": "EXECUTING"})
            changed[order_pk] = time.time()
        deadline = time.time() + 4 * LAG_PERIOD_SECONDS + 10
        while time.time() < deadline and InboundWebhook.objects.filter(event="CATCHUP").count() < n:
            time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(30)
        scaled.disable()
        rows = InboundWebhook.objects.filter(event="CATCHUP").values_list("result", "received_at")
        lags = [at.timestamp() - changed[int(result["order_id"])] for result, at in rows]
        catchup_calls = sum(1 for r in sandbox.requests if str(r.get("request_id", "")).startswith("catchup:"))
        limited = sum(1 for r in sandbox.requests if r["status"] == 503)
    p50, top = (percentile(lags, 50), max(lags)) if lags else (None, None)
    ctx.detail(
        "catchup (lag under load)",
        f"{n} stage changes made in the sandbox over {seconds:.0f} s with event posts off; deliveries take "
        f"{LOAD_SHARE:.0%} of the {RATE}/s limit ({load_calls[0]} calls); catch-up every {LAG_PERIOD_SECONDS:g} s "
        f"(overlap {LAG_OVERLAP_SECONDS} s; {catchup_calls} calls). Applied {len(lags)}/{n}; "
        f"lag p50 {p50 or 0:.1f} s, max {top or 0:.1f} s; "
        f"portal 503 answers: {limited}. With the 5 min period the lag is the period plus the same run time.",
    )
    return [
        Result(
            metric=f"catch-up lag under load ({LOAD_SHARE:.0%} of the limit used), max",
            ours=top,
            unit="s",
            target=f"≤ period ({LAG_PERIOD_SECONDS:g} s here) + 5 s, no 503",
            passed=len(lags) == n and top is not None and top <= LAG_PERIOD_SECONDS + 5 and limited == 0,
            note=f"p50 {p50 or 0:.1f} s; {len(lags)}/{n} applied; {limited} portal 503 answers; period scaled down.",
        )
    ]


def run(ctx) -> list[Result]:
    from bench.django_setup import reset

    reset()
    quiet = _quiet_cost(ctx)
    reset()  # empties the tables and the Redis db (the rate-limit bucket too)
    return quiet + _lag_under_load(ctx)
