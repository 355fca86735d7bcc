"""Worker and beat liveness. Workers write Heartbeat(kind="worker") when ready and every 30 s from a daemon thread;
periodic tasks write Heartbeat(kind="beat") when they run (integrations.tasks.beat_seen). Readers judge staleness."""

import logging
import os
import threading
from datetime import datetime

from celery.signals import worker_ready, worker_shutdown
from django.db import close_old_connections, connection
from django.utils import timezone

from integrations.models import Heartbeat

log = logging.getLogger("integrations.worker")
WORKER_INTERVAL_SECONDS = 30
WORKER_STALE_SECONDS = 3 * WORKER_INTERVAL_SECONDS  # three missed beats
BEAT_STALE_SECONDS = 3 * 30  # the beat_heartbeat task runs every 30 s
# Periodic tasks whose heartbeat name is not the task's function name.
BEAT_HEARTBEAT_NAMES = {"integrations.tasks.beat_heartbeat": "beat"}

_pulse: "WorkerPulse | None" = None


def worker_seen(*, name: str, info: dict) -> None:
    Heartbeat.objects.update_or_create(name=name, defaults={"kind": "worker", "seen_at": timezone.now(), "info": info})


class WorkerPulse(threading.Thread):
    """Writes this worker's heartbeat every `interval` seconds until stopped; a DB outage only skips beats."""

    def __init__(self, name: str, info: dict, interval: float | None = None):
        super().__init__(name="integrations-heartbeat", daemon=True)
        self.worker_name, self.info = name, info
        self.interval = interval or WORKER_INTERVAL_SECONDS
        self.stopped = threading.Event()

    def beat(self, **extra) -> None:
        try:
            worker_seen(name=self.worker_name, info={**self.info, **extra})
        except Exception as exc:  # noqa: BLE001 - liveness reporting must never take the worker down
            log.warning("[WORKER] heartbeat not written (%s)", type(exc).__name__)
            connection.close()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            close_old_connections()  # this thread's own connection: drop it if the database restarted
            self.beat(state="running")
        connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
        self.beat(state="stopped")


@worker_ready.connect(dispatch_uid="integrations_worker_ready_heartbeat")
def on_worker_ready(sender=None, **kwargs) -> None:
    """sender is the worker's Consumer (celery.apps.worker sends worker_ready with sender=consumer)."""
    global _pulse
    controller = getattr(sender, "controller", None)
    name = getattr(sender, "hostname", None) or getattr(controller, "hostname", None) or f"worker@{os.getpid()}"
    info = {
        "pid": os.getpid(),
        "concurrency": getattr(controller, "concurrency", None),
        "started_at": timezone.now().isoformat(),
    }
    if _pulse is not None:
        _pulse.stopped.set()
    _pulse = WorkerPulse(name, info)
    _pulse.beat(state="running")
    _pulse.start()
    log.info("[WORKER] heartbeat %s every %ss", name, WORKER_INTERVAL_SECONDS)


@worker_shutdown.connect(dispatch_uid="integrations_worker_shutdown_heartbeat")
def on_worker_shutdown(sender=None, **kwargs) -> None:
    """A clean stop is recorded as such, so the status page can tell it from a crash."""
    global _pulse
    if _pulse is not None:
        _pulse.stop()
        _pulse = None


# Reading


def _age(seen_at: datetime | None, now: datetime) -> float | None:
    return round((now - seen_at).total_seconds(), 1) if seen_at else None


def worker_liveness(*, now: datetime | None = None) -> list[dict]:
    """Every worker that ever reported; alive = seen within WORKER_STALE_SECONDS and not stopped cleanly."""
    now = now or timezone.now()
    workers = []
    for beat in Heartbeat.objects.filter(kind="worker").order_by("name"):
        age = _age(beat.seen_at, now)
        state = beat.info.get("state", "running")
        workers.append(
            {
                "name": beat.name,
                "last_seen_at": beat.seen_at,
                "last_seen_age_seconds": age,
                "alive": age <= WORKER_STALE_SECONDS and state != "stopped",
                "state": state,
                "pid": beat.info.get("pid"),
                "concurrency": beat.info.get("concurrency"),
            }
        )
    return workers


def beat_liveness(*, now: datetime | None = None) -> dict:
    """Last run of each scheduled task (written by the worker that ran it) and whether beat is ticking."""
    from app.celery import BEAT_SCHEDULE

    now = now or timezone.now()
    seen = dict(Heartbeat.objects.filter(kind="beat").values_list("name", "seen_at"))
    tasks = []
    for name, entry in BEAT_SCHEDULE.items():
        heartbeat_name = BEAT_HEARTBEAT_NAMES.get(entry["task"], entry["task"].rsplit(".", 1)[-1])
        last = seen.get(heartbeat_name)
        age = _age(last, now)
        every = entry["every_seconds"]
        tasks.append(
            {
                "name": name,
                "task": entry["task"],
                "every_seconds": every,
                "last_run_at": last,
                "age_seconds": age,
                "overdue": None if age is None else age > 2 * every + 60,  # None: never ran (yet)
            }
        )
    beat_age = _age(seen.get("beat"), now)
    return {
        "alive": beat_age is not None and beat_age <= BEAT_STALE_SECONDS,
        "last_seen_age_seconds": beat_age,
        "tasks": tasks,
    }
