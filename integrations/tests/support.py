"""A recording test target for the engine tests: scripted verdicts, optional blocking, thread-safe."""

import threading
from collections.abc import Callable

from integrations.clients.http import HttpResult
from integrations.models import EventType
from integrations.policy import Verdict
from integrations.services import link_get
from integrations.targets.base import Claimed, Outcome


class RecordingTarget:
    def __init__(self, coalesces: bool = False):
        self.coalesces = coalesces
        self.lock = threading.Lock()
        self.calls: list[dict] = []
        self.script: list[Callable[[Claimed], Outcome | None]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.next_remote = 100

    def creates(self) -> list[dict]:
        return [c for c in self.calls if c["action"] == "create"]

    def worst_call_seconds(self) -> float:
        return 0.0  # sends nothing: a lost round's rows are taken over as soon as the lease ends

    def deliver(self, integration, claimed: list[Claimed], lease=None) -> dict[int, Outcome]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(30)
        outcomes = {}
        for item in claimed:
            link = link_get(
                integration_id=integration.pk, content_type_id=item.sync.content_type_id, object_id=item.sync.object_id
            )
            action = "update" if link else "create"
            if item.sync.event_type == EventType.DELETED:
                action = "delete"
            with self.lock:
                scripted = self.script.pop(0)(item) if self.script else None
                if scripted is None:
                    remote = link.remote_id if link else str(self.next_remote)
                    self.next_remote += 1
                    scripted = Outcome(verdict=Verdict.OK, remote_id=remote, http=HttpResult(status=200))
                self.calls.append(
                    {
                        "sync": item.id,
                        "event": item.sync.event_type,
                        "action": action,
                        "data": item.data,
                        "remote_id": link.remote_id if link else None,
                        "verdict": scripted.verdict,
                        "followers": list(item.followers),
                    }
                )
            outcomes[item.id] = scripted
        return outcomes


def answer(verdict: Verdict, status: int | None = None, retry_after: float | None = None, error: str = "boom"):
    """A script step: the next delivery gets this verdict."""
    return lambda item: Outcome(verdict=verdict, http=HttpResult(status=status), retry_after=retry_after, error=error)


def drain_all(rounds: int = 40) -> None:
    """Deliver everything, pulling scheduled retries and deferrals forward (tests never wait out real backoff)."""
    from datetime import timedelta

    from django.utils import timezone

    from integrations import dispatcher
    from integrations.models import IntegrationSync, SyncStatus

    for _ in range(rounds):
        dispatcher.drain(max_seconds=20)
        waiting = IntegrationSync.objects.filter(status__in=[SyncStatus.RETRYING, SyncStatus.PENDING])
        if not waiting.exists():
            return
        waiting.update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def child_database_env(db_name: str | None = None) -> dict[str, str]:
    """DATABASE_URL (and PGHOST for a unix socket) that point a child process at this test run's PostgreSQL server.

    The embedded PostgreSQL listens on a unix socket directory, which a URL cannot carry as its host: libpq takes it
    from PGHOST when the URL names none."""
    from django.db import connection

    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    host = db["HOST"] or "127.0.0.1"
    env = {}
    if host.startswith("/"):
        env["PGHOST"] = host
        location = ""
    else:
        location = f"{host}:{db['PORT'] or 5432}"
    env["DATABASE_URL"] = f"postgres://{auth}@{location}/{db_name or db['NAME']}"
    return env
