"""Bitrix24 throughput against BitrixSandbox(rate=2, burst=50): real BitrixTarget via dispatcher.drain vs one REST
call per operation through BitrixClient.call under the same Redis token bucket; and coalescing of rapid updates."""

import time
from decimal import Decimal

from bench.report import Result

RATE, BURST = 2, 50


def _sandbox():
    from integrations.sandbox.bitrix24 import BitrixSandbox

    return BitrixSandbox(rate=RATE, burst=BURST).start()


def _integration(sandbox, name="bitrix"):
    from integrations.models import Integration, IntegrationKind

    return Integration.objects.create(
        kind=IntegrationKind.BITRIX24, name=name, endpoint=sandbox.webhook_url, rate_limit=f"{RATE}/{BURST}"
    )


def _rest_calls(sandbox) -> int:
    return sum(1 for r in sandbox.requests if not str(r.get("method", "")).startswith("sandbox"))


def _flush_bucket() -> None:
    import redis

    from bench.django_setup import REDIS_URL

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter("bitrix-bucket:*"):
        client.delete(key)


def _analyze() -> None:
    """The tables were emptied by TRUNCATE just before: give the planner the statistics a live table has (autovacuum
    would, a few seconds later), so the run measures delivery, not plans made for an empty table."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE integrations_integrationsync, integrations_externallink, orders_order, users_user")


def _drain_until(done, max_seconds: float) -> float:
    """dispatcher.drain in a loop (deferred rows wait their retry_after for real) until done() or time is up."""
    from integrations import dispatcher

    started = time.perf_counter()
    while time.perf_counter() - started < max_seconds:
        handled = dispatcher.drain(max_seconds=max_seconds)
        if done():
            break
        if not handled:
            time.sleep(0.05)
    return time.perf_counter() - started


def _orders(n_orders: int, n_users: int):
    from bench.django_setup import make_user
    from orders import services

    per_user = max(1, n_orders // n_users)
    orders, user = [], None
    for i in range(n_orders):
        if i % per_user == 0 and len(orders) // per_user < n_users:
            user = make_user(i, tag=f"b{n_users}-")
        orders.append(services.order_create(user=user, title=f"bench {i}", amount=Decimal("25.00")))
    return orders


def ours(n_orders: int, n_users: int, max_seconds: float) -> dict:
    from integrations.models import ExternalLink

    sandbox = _sandbox()
    try:
        integration = _integration(sandbox, name=f"bitrix-{n_users}")
        _orders(n_orders, n_users)
        _analyze()
        _flush_bucket()  # start with a full bucket, like the baseline
        linked = ExternalLink.objects.filter(integration=integration, content_type__model="order")
        elapsed = _drain_until(lambda: linked.count() >= n_orders, max_seconds)
        deals = len(sandbox.deals)
        return {"deals": deals, "seconds": elapsed, "rate": deals / elapsed, "calls": _rest_calls(sandbox)}
    finally:
        sandbox.stop()


def baseline(n_orders: int, max_seconds: float) -> dict:
    """crm.contact.add then crm.deal.add per order, each its own call, each waiting for a token of the same bucket."""
    from django.conf import settings

    from integrations import payloads
    from integrations.targets.bitrix_limits import bitrix_client_for
    from orders.models import Order

    sandbox = _sandbox()
    try:
        integration = _integration(sandbox, name="bitrix-baseline")
        orders = list(Order.objects.select_related("user").order_by("id")[:n_orders])
        client = bitrix_client_for(integration)
        originator = settings.BITRIX_ORIGINATOR_ID
        _flush_bucket()
        started, deals = time.perf_counter(), 0
        for order in orders:
            if time.perf_counter() - started > max_seconds:
                break
            contact = client.call(
                "crm.contact.add",
                {"fields": payloads.bitrix_contact_fields(payloads.snapshot(order.user), originator=originator)},
            )
            fields = payloads.bitrix_deal_fields(
                payloads.snapshot(order),
                originator=originator,
                stage_map=settings.BITRIX_STAGE_MAP,
                contact_id=str(contact.result),
            )
            if client.call("crm.deal.add", {"fields": fields}).ok:
                deals += 1
        elapsed = time.perf_counter() - started
        return {"deals": deals, "seconds": elapsed, "rate": deals / elapsed, "calls": _rest_calls(sandbox)}
    finally:
        sandbox.stop()


def rapid_updates(n_updates: int) -> dict:
    from bench.django_setup import make_user
    from integrations.models import IntegrationSync, SyncStatus
    from orders import services

    sandbox = _sandbox()
    try:
        _integration(sandbox, name="bitrix-updates")
        order = services.order_create(user=make_user(0, tag="upd"), title="rapid", amount=Decimal("1.00"))
        _drain_until(lambda: len(sandbox.deals) == 1, 30)
        before = _rest_calls(sandbox)
        for i in range(n_updates):
            order = services.order_update(order=order, data={"title": f"rapid v{i}", "quantity": i + 1})
        open_rows = IntegrationSync.objects.filter(status__in=[SyncStatus.PENDING, SyncStatus.RETRYING])
        _drain_until(lambda: not open_rows.exists(), 30)
        [deal] = sandbox.deals.values()
        return {"calls": _rest_calls(sandbox) - before, "final_title_ok": deal.get("TITLE") is not None}
    finally:
        sandbox.stop()


def run(ctx) -> list[Result]:
    from bench.django_setup import reset

    n = ctx.size(60, 1000)
    shared_users = ctx.size(6, 100)
    new = ours(n, n, max_seconds=ctx.size(30, 300))
    base = baseline(n, max_seconds=ctx.size(3, 30))
    reset()
    shared = ours(n, shared_users, max_seconds=ctx.size(30, 300))
    reset()
    upd = rapid_updates(ctx.size(20, 100))
    ctx.detail(
        "Bitrix24",
        f"Sandbox rate {RATE}/s, burst {BURST}; both sides start with a full bucket (Redis db 11).\n"
        f"- ours, {n} orders each with a new user: {new['deals']} deals in {new['seconds']:.1f} s, "
        f"{new['calls']} HTTP calls (batch of ≤50 commands each).\n"
        f"- ours, {n} orders sharing {shared_users} users: {shared['deals']} deals in {shared['seconds']:.1f} s, "
        f"{shared['calls']} HTTP calls.\n"
        f"- baseline (contact.add + deal.add per order, time-bounded): {base['deals']} deals in "
        f"{base['seconds']:.1f} s, {base['calls']} calls.\n"
        f"- {ctx.size(20, 100)} rapid updates of one order → {upd['calls']} REST call(s) after the deal existed.",
    )
    return [
        Result(
            metric=f"Bitrix deals/s, {n} new orders + new users",
            baseline=base["rate"],
            ours=new["rate"],
            unit="deals/s",
            target="≥ 90/s (≥ 45×)",
            passed=new["rate"] >= 90 and new["rate"] / base["rate"] >= 45,
            note=f"{new['calls']} HTTP calls for {new['deals']} deals; contact + deal = 2 commands per order.",
        ),
        Result(
            metric=f"Bitrix deals/s, {n} orders / {shared_users} users",
            baseline=base["rate"],
            ours=shared["rate"],
            unit="deals/s",
            target="≥ 90/s (≥ 45×)",
            passed=shared["rate"] >= 90 and shared["rate"] / base["rate"] >= 45,
            note=f"{shared['calls']} HTTP calls for {shared['deals']} deals.",
        ),
        Result(
            metric=f"Bitrix calls for {ctx.size(20, 100)} rapid updates of one order",
            baseline=float(ctx.size(20, 100)),
            ours=float(upd["calls"]),
            unit="calls",
            target="≤ 3",
            passed=upd["calls"] <= 3,
            note="baseline = one call per update; ours coalesces to the latest state.",
        ),
    ]
