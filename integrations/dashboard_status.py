"""The dashboard's status block: workers, beat, broker and the oldest pending row, each with a one-line verdict.

Reads what the status API reads (integrations/heartbeats.py, integrations/selectors.py). The broker check runs in a
daemon thread the page waits for at most BROKER_DEADLINE_SECONDS, so a broker that accepts connections and never
answers (or a host name that never resolves) cannot hold the page.
"""

import threading
from datetime import datetime

from integrations import selectors
from integrations.heartbeats import WORKER_STALE_SECONDS, beat_liveness, worker_liveness

BROKER_TIMEOUT_SECONDS = 1.0  # socket connect and read timeout of the check itself
BROKER_DEADLINE_SECONDS = 2.0  # the page never waits longer than this for the broker, whatever the socket does
WORKERS_SHOWN = 10  # heartbeats of workers gone for up to 7 days are kept; the page lists the most relevant few


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def broker_status_bounded(*, deadline: float) -> dict:
    """selectors.broker_status, given at most `deadline` seconds; past that the broker counts as unreachable."""
    found: dict = {}
    done = threading.Event()

    def check() -> None:
        try:
            found.update(selectors.broker_status(timeout=BROKER_TIMEOUT_SECONDS))
        finally:
            done.set()

    threading.Thread(target=check, name="dashboard-broker-check", daemon=True).start()
    if not done.wait(deadline):
        return {"reachable": False, "queue_length": None, "error": f"no answer within {deadline:g} s"}
    return dict(found) or {"reachable": False, "queue_length": None}


def _worker_state(worker: dict) -> str:
    if worker["alive"]:
        return "alive"
    return "stopped" if worker["state"] == "stopped" else "silent"


def workers_block(*, now: datetime) -> dict:
    workers = worker_liveness(now=now)
    alive = [w for w in workers if w["alive"]]
    ranked = sorted(workers, key=lambda w: (not w["alive"], w["last_seen_age_seconds"]))
    shown = [
        {**w, "verdict": _worker_state(w), "age": format_age(w["last_seen_age_seconds"])}
        for w in ranked[:WORKERS_SHOWN]
    ]
    if alive:
        summary = f"{len(alive)} alive" + (f", {len(workers) - len(alive)} not" if len(workers) > len(alive) else "")
    elif workers:
        summary = f"no live worker (none seen within {WORKER_STALE_SECONDS} s): nothing is being delivered"
    else:
        summary = "no worker has ever reported: start one (celery -A app worker)"
    return {"ok": bool(alive), "summary": summary, "workers": shown, "hidden": max(0, len(workers) - WORKERS_SHOWN)}


def beat_block(*, now: datetime, workers_alive: bool) -> dict:
    beat = beat_liveness(now=now)
    age = beat["last_seen_age_seconds"]
    overdue = [t["name"] for t in beat["tasks"] if t["overdue"]]
    if beat["alive"]:
        summary = f"ticking (last seen {format_age(age)} ago)"
    elif age is None:
        summary = "never seen: start beat (celery -A app beat)"
    else:
        summary = f"no heartbeat for {format_age(age)}"
    note = "" if workers_alive else "beat heartbeats are written by the workers that run its tasks: no worker, no beat"
    return {"ok": beat["alive"] and not overdue, "summary": summary, "overdue": overdue, "note": note}


def broker_block() -> dict:
    broker = broker_status_bounded(deadline=BROKER_DEADLINE_SECONDS)
    if broker["reachable"]:
        queued = broker["queue_length"]
        return {"ok": True, "summary": f"reachable, {queued} message{'' if queued == 1 else 's'} queued"}
    reason = broker.get("error") or "connection failed"
    return {"ok": False, "summary": f"unreachable ({reason}): no task reaches a worker until it is back (rows wait)"}


def oldest_pending_block(integrations: list[dict]) -> dict:
    waiting = [i for i in integrations if i["oldest_pending_age_seconds"] is not None]
    if not waiting:
        return {"ok": True, "summary": "nothing pending"}
    oldest = max(waiting, key=lambda i: i["oldest_pending_age_seconds"])
    return {
        "ok": True,  # a growing age is the signal; the page shows it, the reader judges
        "summary": f"{format_age(oldest['oldest_pending_age_seconds'])} ({oldest['name']})",
        "seconds": oldest["oldest_pending_age_seconds"],
    }


def system_status(*, now: datetime, integrations: list[dict]) -> dict:
    """{workers, beat, broker, oldest_pending}: each a dict with `ok` and a `summary` line for the page."""
    workers = workers_block(now=now)
    return {
        "workers": workers,
        "beat": beat_block(now=now, workers_alive=workers["ok"]),
        "broker": broker_block(),
        "oldest_pending": oldest_pending_block(integrations),
    }
