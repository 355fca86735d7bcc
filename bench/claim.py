"""New-sync dispatch latency with a large history (synced rows via generate_series) vs an empty table, plus EXPLAIN
of the claim query. One new order event → time dispatch_once() (claim, signed POST, complete), repeated."""

import statistics
import time
from decimal import Decimal

from bench.report import Result


def _measure(integration_id: int, user, repeats: int) -> tuple[float, float]:
    """Median ms of dispatch_once for one fresh pending row, and median ms of the claim alone."""
    from integrations import dispatcher, services
    from integrations.models import Integration
    from orders import services as order_services

    total, claim = [], []
    integration = Integration.objects.get(pk=integration_id)
    original = services.sync_claim_due

    def timed(**kwargs):
        t0 = time.perf_counter()
        try:
            return original(**kwargs)
        finally:
            claim.append((time.perf_counter() - t0) * 1000)

    dispatcher.services.sync_claim_due = timed
    try:
        for i in range(repeats):
            order_services.order_create(user=user, title=f"claim {i}", amount=Decimal("2.00"))
            t0 = time.perf_counter()
            handled = dispatcher.dispatch_once(integration.pk)
            total.append((time.perf_counter() - t0) * 1000)
            assert handled == 1, handled
    finally:
        dispatcher.services.sync_claim_due = original
    return statistics.median(total), statistics.median(claim)


def _explain(integration_id: int, user) -> str:
    from django.conf import settings
    from django.db import connection, transaction

    from integrations import services
    from orders import services as order_services

    order_services.order_create(user=user, title="explain", amount=Decimal("2.00"))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + services._CLAIM_SQL,
            {
                "lease": settings.SYNC_LEASE_SECONDS,
                "grace": 0,
                "token": None,
                "integration": integration_id,
                "limit": 50,
            },
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
        transaction.set_rollback(True)
    return plan


def run(ctx) -> list[Result]:
    from django.contrib.contenttypes.models import ContentType

    from bench.django_setup import make_user
    from bench.history import insert_synced
    from integrations.clients.n8n import generate_secret
    from integrations.models import Integration, IntegrationKind
    from integrations.sandbox.n8n import N8nReceiver
    from orders.models import Order

    target_rows = ctx.size(100_000, 10_000_000)
    repeats = ctx.size(10, 40)
    user = make_user(0, tag="claim")
    receiver = N8nReceiver().start()
    try:
        integration = Integration.objects.create(
            kind=IntegrationKind.N8N, name="n8n-claim", endpoint=receiver.url, secret=generate_secret()
        )
        _measure(integration.pk, user, 5)  # warm-up
        empty_total, empty_claim = _measure(integration.pk, user, repeats)
        empty_plan = _explain(integration.pk, user)
        from integrations import dispatcher

        dispatcher.drain(integration_id=integration.pk)
        inserted, seconds = insert_synced(
            integration_id=integration.pk,
            content_type_id=ContentType.objects.get_for_model(Order).pk,
            total=target_rows,
            age_days=5,
            attempts=False,
            chunk=500_000,
            max_seconds=ctx.size(None, 900),
        )
        _measure(integration.pk, user, 5)
        full_total, full_claim = _measure(integration.pk, user, repeats)
        full_plan = _explain(integration.pk, user)
    finally:
        receiver.stop()
    ctx.detail(
        "dispatch latency with history",
        f"History: {inserted:,} synced rows of the same integration inserted in {seconds:.0f} s "
        f"(target {target_rows:,}; the full run stops inserting after 900 s), then ANALYZE.\n"
        f"dispatch_once for one new row, median of {repeats}: empty {empty_total:.2f} ms (claim {empty_claim:.2f} ms); "
        f"with history {full_total:.2f} ms (claim {full_claim:.2f} ms).\n\n"
        f"EXPLAIN ANALYZE of the claim query, empty table:\n\n```\n{empty_plan}\n```\n\n"
        f"With {inserted:,} history rows:\n\n```\n{full_plan}\n```",
    )
    return [
        Result(
            metric=f"new-sync dispatch latency, {inserted:,} history rows",
            baseline=empty_total,
            ours=full_total,
            unit="ms",
            target="≤ 1.2×",
            passed=full_total / empty_total <= 1.2,
            note=f"claim query alone: {empty_claim:.2f} → {full_claim:.2f} ms.",
        ),
    ]
