"""/health/: database and broker reachability for load balancers; no secrets, no details beyond ok/fail."""

from django.db import connection
from django.http import JsonResponse


def broker_reachable(timeout: float = 1.0) -> bool:
    import redis
    from django.conf import settings

    try:
        return bool(
            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout).ping()
        )
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


def database_reachable() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001
        return False


def health(request):
    checks = {"database": database_reachable(), "broker": broker_reachable()}
    ok = all(checks.values())
    return JsonResponse({"status": "ok" if ok else "degraded", "checks": checks}, status=200 if ok else 503)
