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
