"""Retention cleanup of 1,000,000 synced rows (+ one attempt each) older than SYNC_RETENTION_DAYS."""

import time

from bench.report import Result


def run(ctx) -> list[Result]:
    from django.conf import settings
    from django.contrib.contenttypes.models import ContentType

    from bench.history import insert_synced
    from integrations import retention
    from integrations.models import Integration, IntegrationKind, IntegrationSync
    from orders.models import Order

    n = ctx.size(20_000, 1_000_000)
    integration = Integration.objects.create(kind=IntegrationKind.N8N, name="n8n-ret", endpoint="http://127.0.0.1:9/")
    ct = ContentType.objects.get_for_model(Order)
    inserted, insert_seconds = insert_synced(
        integration_id=integration.pk,
        content_type_id=ct.pk,
        total=n,
        age_days=settings.SYNC_RETENTION_DAYS + 10,
        attempts=True,
    )
    kept = IntegrationSync.objects.count() - inserted
    batches: list[float] = []
    original = retention._delete_sync_batch

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            batches.append(time.perf_counter() - t0)

    retention._delete_sync_batch = timed
    try:
        started = time.perf_counter()
        totals = retention.cleanup_history(max_seconds=600)
        elapsed = time.perf_counter() - started
    finally:
        retention._delete_sync_batch = original
    longest = max(batches) if batches else 0.0
    left = IntegrationSync.objects.count()
    ctx.detail(
        "retention",
        f"Inserted {inserted:,} synced rows + {inserted:,} attempts (generate_series) in {insert_seconds:.1f} s.\n"
        f"cleanup_history(): {totals} in {elapsed:.1f} s; {len(batches)} sync batches "
        f"(batch_size 5000), longest {longest * 1000:.0f} ms, median "
        f"{sorted(batches)[len(batches) // 2] * 1000 if batches else 0:.0f} ms; {left - kept} history rows left.",
    )
    return [
        Result(
            metric=f"retention cleanup of {inserted:,} rows",
            ours=elapsed,
            unit="s",
            target="< 60 s",
            passed=elapsed < 60 and totals["syncs"] >= inserted,
            note=f"deleted {totals['syncs']:,} syncs + {totals['attempts']:,} attempts in {len(batches)} batches.",
        ),
        Result(
            metric="retention longest batch (lock-hold proxy)",
            ours=longest * 1000,
            unit="ms",
            target="≤ 1000 ms",
            passed=longest <= 1.0,
            note="each batch is its own transaction; its duration bounds how long it holds row locks.",
        ),
    ]
