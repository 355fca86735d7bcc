"""Onboarding backfill into an empty BitrixSandbox(rate=2, burst=50): share of the portal's limit used, and a
`bitrix_backfill` process killed (SIGKILL) halfway through queueing, then run again: duplicates and missing objects."""

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from io import StringIO
from pathlib import Path

from bench.report import Result

RATE, BURST = 2, 50
ROOT = Path(__file__).resolve().parent.parent


def _shop(n_users: int, n_orders: int) -> None:
    """Customers and orders older than the integration: written past the signals, no sync row."""
    from orders.models import Order
    from users.models import User

    users = User.objects.bulk_create(
        [User(username=f"bf{i}", email=f"bf{i}@bench.example.com", first_name=f"N{i}") for i in range(n_users)],
        batch_size=2000,
    )
    Order.objects.bulk_create(
        [
            Order(user=users[i % n_users], title=f"old {i}", amount=Decimal("25.00"), currency="USD")
            for i in range(n_orders)
        ],
        batch_size=2000,
    )


def _worker(stop: threading.Event) -> threading.Thread:
    """One delivery worker: the dispatcher (what a Celery worker runs), in a thread."""

    def loop():
        from django.db import connection

        from integrations import dispatcher

        try:
            while not stop.is_set():
                if not dispatcher.drain(max_seconds=5):
                    stop.wait(0.05)
        finally:
            connection.close()

    thread = threading.Thread(target=loop, name="bench-backfill-worker", daemon=True)
    thread.start()
    return thread


def _killed_halfway(integration, total: int, max_seconds: float) -> int:
    """`manage.py bitrix_backfill --no-wait` in a process of its own, SIGKILLed once half the rows are queued."""
    from django.db import connection

    from bench.django_setup import bench_env
    from integrations.models import IntegrationSync

    env = {**os.environ, **bench_env(connection.settings_dict["NAME"])}
    command = [sys.executable, "manage.py", "bitrix_backfill", "--integration", integration.name, "--no-wait"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = IntegrationSync.objects.filter(integration=integration, backfill=True)
    deadline = time.monotonic() + max_seconds
    try:
        while rows.count() < total // 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    return rows.count()


def backfill(n_users: int, n_orders: int, *, kill: bool, max_seconds: float) -> dict:
    from django.core.management import call_command

    from bench.bitrix import _analyze, _flush_bucket, _integration, _sandbox
    from integrations.models import IntegrationSync, SyncStatus

    sandbox = _sandbox()
    stop = threading.Event()
    try:
        _shop(n_users, n_orders)
        integration = _integration(sandbox, name="bitrix-backfill")
        _analyze()
        _flush_bucket()
        thread = _worker(stop)
        started = time.perf_counter()
        at_kill = _killed_halfway(integration, n_users + n_orders, max_seconds) if kill else None
        call_command(
            "bitrix_backfill", "--integration", integration.name, "--no-wait", stdout=StringIO(), stderr=StringIO()
        )
        open_rows = IntegrationSync.objects.filter(
            integration=integration, status__in=[SyncStatus.PENDING, SyncStatus.RETRYING, SyncStatus.IN_PROGRESS]
        )
        while open_rows.exists() and time.perf_counter() - started < max_seconds:
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        stop.set()
        thread.join(30)
        return _outcome(sandbox, n_users, n_orders, elapsed, at_kill)
    finally:
        stop.set()
        sandbox.stop()


def _outcome(sandbox, n_users: int, n_orders: int, elapsed: float, at_kill: int | None) -> dict:
    from orders.models import Order
    from users.models import User

    answered = [r for r in sandbox.requests if r.get("status") == 200]
    span = answered[-1]["ts"] - answered[0]["ts"] if len(answered) > 1 else 0.0
    allowed = BURST + RATE * span  # what the portal's bucket admits between the first and the last call
    result = {"calls": len(answered), "span": span, "share": len(answered) / allowed, "elapsed": elapsed}
    result["minimal"] = -(-n_users // 50) + -(-n_orders // 50)
    result["refused"] = sum(1 for r in sandbox.requests if r.get("status") == 503)
    for name, rows, ids in (
        ("contacts", sandbox.contacts, User.objects.values_list("pk", flat=True)),
        ("deals", sandbox.deals, Order.objects.values_list("pk", flat=True)),
    ):
        per_object = Counter(str(r.get("ORIGIN_ID")) for r in rows.values())
        result[f"{name}_duplicates"] = sum(n - 1 for n in per_object.values() if n > 1)
        result[f"{name}_missing"] = sum(1 for pk in ids if str(pk) not in per_object)
    result["at_kill"] = at_kill
    return result


def run(ctx) -> list[Result]:
    if ctx.smoke:
        # The smoke budget (90 s for every metric) has no room for a second Django process and a portal-limited
        # delivery: the row runs at full size only (`python -m bench --only backfill`); the test suite covers it.
        return []
    n_users, n_orders = (
        int(os.environ.get("BENCH_BACKFILL_USERS", 4000)),
        int(os.environ.get("BENCH_BACKFILL_ORDERS", 20000)),
    )
    out = backfill(n_users, n_orders, kill=True, max_seconds=1800)
    duplicates = out["contacts_duplicates"] + out["deals_duplicates"]
    missing = out["contacts_missing"] + out["deals_missing"]
    ctx.detail(
        "Backfill (onboarding)",
        f"{n_orders} orders of {n_users} customers, written before the integration existed, into an empty "
        f"BitrixSandbox (rate {RATE}/s, burst {BURST}); one delivery worker (the dispatcher in a thread). "
        f"`manage.py bitrix_backfill --no-wait` ran in its own process and was SIGKILLed once {out['at_kill']} of "
        f"{n_users + n_orders} rows were queued, then ran again to the end.\n"
        f"- {out['calls']} answered portal calls in {out['span']:.1f} s between the first and the last "
        f"(the bucket admits {BURST} + {RATE}/s × that = {BURST + RATE * out['span']:.0f}): "
        f"{100 * out['share']:.1f} % of the limit; {out['refused']} refused with QUERY_LIMIT_EXCEEDED.\n"
        f"- minimal calls for the writes: {out['minimal']} batches of 50; the rest are the portal checks and "
        f"reads of both runs.\n"
        f"- {out['elapsed']:.1f} s from the first run's start to the last delivery.\n"
        f"- contacts: {out['contacts_duplicates']} duplicates, {out['contacts_missing']} missing; deals: "
        f"{out['deals_duplicates']} duplicates, {out['deals_missing']} missing.",
    )
    return [
        Result(
            metric=f"Backfill {n_orders} orders / {n_users} users, share of the portal limit",
            ours=100 * out["share"],
            unit="%",
            target="≥ 95 %",
            passed=out["share"] >= 0.95,
            note=f"{out['calls']} calls in {out['span']:.0f} s at {RATE}/s, burst {BURST}; killed halfway, run again.",
        ),
        Result(
            metric="Backfill killed halfway and run again, duplicates + missing",
            ours=float(duplicates + missing),
            unit="objects",
            target="0",
            passed=duplicates == 0 and missing == 0,
            note=f"{duplicates} duplicate, {missing} missing contacts/deals.",
        ),
    ]
