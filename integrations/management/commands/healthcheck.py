"""Container health checks (docker-compose.yml): exit 0 when the service in this container is healthy, else 1."""

import os

import requests
from celery.utils.nodenames import default_nodename
from django.core.management.base import BaseCommand, CommandError

from integrations.heartbeats import BEAT_STALE_SECONDS, WORKER_STALE_SECONDS, beat_liveness, worker_liveness


def web_live(*, port: int) -> tuple[bool, str]:
    url = f"http://127.0.0.1:{port}/health/live/"
    try:
        status = requests.get(url, timeout=4).status_code
    except requests.RequestException as exc:
        return False, f"{url}: {type(exc).__name__}"
    return status == 200, f"{url}: {status}"


def worker_alive(*, name: str) -> tuple[bool, str]:
    """This container's worker wrote its heartbeat within WORKER_STALE_SECONDS and did not stop."""
    worker = next((w for w in worker_liveness() if w["name"] == name), None)
    if worker is None:
        return False, f"{name}: no heartbeat yet"
    return worker["alive"], f"{name}: {worker['state']}, last heartbeat {worker['last_seen_age_seconds']} s ago"


def beat_alive() -> tuple[bool, str]:
    """Beat's heartbeat task ran within BEAT_STALE_SECONDS (beat sent it and a worker ran it)."""
    beat = beat_liveness()
    age = beat["last_seen_age_seconds"]
    return beat["alive"], "beat: no heartbeat yet" if age is None else f"beat: last heartbeat {age} s ago"


class Command(BaseCommand):
    help = (
        f"Exit 0 when this container's service is healthy: web answers /health/live/; worker wrote its heartbeat "
        f"within {WORKER_STALE_SECONDS} s; beat's heartbeat task ran within {BEAT_STALE_SECONDS} s."
    )

    def add_arguments(self, parser):
        parser.add_argument("service", choices=["web", "worker", "beat"])
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="web: the port")
        parser.add_argument("--name", help="worker: its node name (default celery@<this host>, as celery names it)")

    def handle(self, *args, service: str, port: int, name: str | None, **options):
        try:
            if service == "web":
                ok, message = web_live(port=port)
            elif service == "worker":
                ok, message = worker_alive(name=name or default_nodename(None))
            else:
                ok, message = beat_alive()
        except Exception as exc:  # noqa: BLE001 - e.g. the database is down: unhealthy, said in one line
            ok, message = False, f"{service}: {type(exc).__name__}: {exc}"
        if not ok:
            raise CommandError(f"unhealthy: {message}")
        self.stdout.write(f"healthy: {message}")
