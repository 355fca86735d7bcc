"""Health for orchestrators and load balancers; no secrets, no details beyond ok/fail.

- liveness (/health/live/): the process answers; touches nothing else.
- readiness (/health/ready/, and /health/ as before): 503 when the database does not answer; the broker's state is
  reported but does not take the web out (orders are stored without it; the sweeper delivers once it is back).
Both answer whatever the Host header: probes send the container's or node's address, not the public host name.
"""

import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection
from django.http import JsonResponse

BROKER_TIMEOUT = 0.5  # seconds per socket step, no retries: a broker that never answers costs the check ~1 s at most
REDIS_SCHEMES = ("redis", "rediss", "redis+socket", "unix")
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "pyamqp": 5672}


def broker_reachable(timeout: float = BROKER_TIMEOUT) -> bool:
    """A Redis broker must answer PING; any other broker must accept a TCP connection."""
    url = settings.CELERY_BROKER_URL
    parts = urlsplit(url)
    try:
        if parts.scheme in REDIS_SCHEMES:
            return _redis_ping(url.replace("redis+socket://", "unix://", 1), timeout)
        address = (parts.hostname or "localhost", parts.port or DEFAULT_PORTS[parts.scheme])
        with socket.create_connection(address, timeout):
            return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


def _redis_ping(url: str, timeout: float) -> bool:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(client.ping())
    finally:
        client.close()


def database_reachable() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001
        return False


def live(request):
    return JsonResponse({"status": "ok"})


def ready(request):
    checks = {"database": database_reachable(), "broker": broker_reachable()}
    if not checks["database"]:
        return JsonResponse({"status": "unavailable", "checks": checks}, status=503)
    return JsonResponse({"status": "ok" if checks["broker"] else "degraded", "checks": checks})


class HealthMiddleware:
    """First in MIDDLEWARE: answers the health paths before anything validates the Host header (ALLOWED_HOSTS)."""

    views = {"/health/live/": live, "/health/ready/": ready, "/health/": ready}

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        view = self.views.get(request.path_info)
        return view(request) if view is not None else self.get_response(request)
