"""Configure Django against the bench database (created if missing), migrate, and reset state between metrics."""

import os

# The servers the bench runs on: the machine's by default; `./dev test`'s smoke run points them at the test run's own
# (the embedded PostgreSQL is a unix socket directory, passed as PGHOST with an empty URL host).
DEFAULT_PG = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
INBOUND_TOKEN = "bench-inbound-token-0123456789"


def bench_env(db_name: str) -> dict[str, str]:
    return {
        "DATABASE_URL": f"{DEFAULT_PG}/{db_name}",
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "LOG_LEVEL": "WARNING",
        "SECRET_KEY": "bench-only-not-secret",
        "FIELD_ENCRYPTION_KEYS": "YmVuY2gtb25seS1ub3Qtc2VjcmV0LWtleS0zMmJ5dGU=",  # bench-only Fernet key
        "BITRIX_WEBHOOK_TOKEN": INBOUND_TOKEN,
        "CONN_MAX_AGE": "60",
    }


def ensure_database(db_name: str, *, fresh: bool = False) -> None:
    """Create the bench database if missing; `fresh` drops it first (a schema left by another checkout's migrations
    cannot break the run)."""
    import psycopg

    with psycopg.connect(f"{DEFAULT_PG}/postgres", autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name]).fetchone():
            conn.execute(f'CREATE DATABASE "{db_name}"')


def setup(db_name: str, *, fresh: bool = False) -> None:
    os.environ.update(bench_env(db_name))
    ensure_database(db_name, fresh=fresh)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    # django-webhook fills its topics in AppConfig.ready(), which on a fresh database runs before the tables exist.
    from django_webhook.models import populate_topics_from_settings

    populate_topics_from_settings()
    webhook_signals(False)
    reset()


def webhook_signals(on: bool) -> None:
    """django-webhook listens to every Order save; only its own benchmark keeps it connected."""
    from django.db.models.signals import post_delete, post_save
    from django_webhook.signals import connect_signals

    from orders.models import Order

    if on:
        connect_signals()
        return
    for signal, name in ((post_save, "post_save"), (post_delete, "post_delete")):
        signal.disconnect(sender=Order, dispatch_uid=f"django_webhook_orders.Order_{name}")


TABLES = [
    "integrations_syncattempt",
    "integrations_integrationsync",
    "integrations_syncstatustally",
    "integrations_sequencecounter",
    "integrations_externallink",
    "integrations_inboundwebhook",
    "integrations_integration",
    "orders_order",
    "users_user",
    "django_webhook_webhookevent",
    "django_webhook_webhook",
]


def reset() -> None:
    """Empty everything the benchmarks write (bench database only) and the bench Redis db."""
    import redis
    from django.db import connection

    from integrations.targets import bitrix_limits

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    redis.Redis.from_url(REDIS_URL).flushdb()
    bitrix_limits._redis = None


def make_user(i: int, tag: str = "u"):
    from users import services

    return services.user_create(email=f"{tag}{i}@bench.example.com")
