from app.celery import app as celery_app


def test_celery_app_loads_reliability_settings_from_django():
    conf = celery_app.conf

    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"]


def test_celery_task_time_limit_is_well_below_visibility_timeout():
    conf = celery_app.conf

    assert conf.task_time_limit < conf.broker_transport_options["visibility_timeout"] / 2


def test_celery_beat_defaults_have_periodic_sync_tasks():
    from app.celery import BEAT_SCHEDULE

    assert {"sweep_due_syncs", "cleanup_sync_history", "reconcile_bitrix"} <= set(BEAT_SCHEDULE)
    assert BEAT_SCHEDULE["sweep_due_syncs"]["task"] == "integrations.tasks.sweep_due_syncs"
    assert BEAT_SCHEDULE["sweep_due_syncs"]["every_seconds"] <= 60
    assert not celery_app.conf.beat_schedule  # stored rows rule; DatabaseScheduler would overwrite them from here


def _settings_in_child(**env) -> dict:
    """The settings a fresh process computes from `env` (nothing else of ours in its environment)."""
    import json
    import os
    import subprocess
    import sys

    child_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    child_env.update(env, DJANGO_SETTINGS_MODULE="app.settings")
    code = (
        "import json; from django.conf import settings as s; from app.celery import app;"
        "print(json.dumps([s.REDIS_URL, s.CELERY_BROKER_URL, app.conf.broker_url]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, text=True, check=True)
    return dict(zip(("redis", "broker", "transport"), json.loads(out.stdout), strict=True))


def test_a_unix_socket_redis_url_works_as_broker_url_whichever_setting_names_it():
    # The embedded Redis listens on a unix socket: redis-py spells it unix://, kombu redis+socket://.
    assert _settings_in_child(REDIS_URL="unix:///run/r.sock") == {
        "redis": "unix:///run/r.sock",
        "broker": "redis+socket:///run/r.sock",
        "transport": "redis+socket:///run/r.sock",
    }
    # Celery reads CELERY_BROKER_URL from the environment before Django's setting: the variable itself must work.
    named = _settings_in_child(REDIS_URL="unix:///run/r.sock", CELERY_BROKER_URL="unix:///run/b.sock")
    assert (named["broker"], named["transport"]) == ("redis+socket:///run/b.sock",) * 2
    assert _settings_in_child(REDIS_URL="redis://h:1/2")["broker"] == "redis://h:1/2"


def test_celery_logs_no_line_per_task_by_default():
    import logging

    from django.conf import settings

    for name in settings.TASK_LOGGERS:  # "Task … received" / "Task … succeeded in …"
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING
