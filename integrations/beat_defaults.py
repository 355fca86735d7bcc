"""Store app.celery.BEAT_SCHEDULE as django-celery-beat rows (IntervalSchedule + PeriodicTask); safe to run again."""

from django.utils import timezone


def install_beat_schedule(apps=None, schedule: dict | None = None) -> list[str]:
    """Create missing schedules and tasks; existing tasks are left as operators edited them. Returns created names.

    `apps` is a migration's app registry (historical models) or None for the live models.
    """
    if schedule is None:
        from app.celery import BEAT_SCHEDULE

        schedule = BEAT_SCHEDULE
    if apps is None:
        from django.apps import apps
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    changes_model = apps.get_model("django_celery_beat", "PeriodicTasks")
    created = []
    for name, entry in schedule.items():
        if task_model.objects.filter(name=name).exists():
            continue
        every = int(entry["every_seconds"])
        # IntervalSchedule has no unique constraint: reuse the first match the way django-celery-beat does.
        interval = interval_model.objects.filter(every=every, period="seconds").order_by("id").first()
        if interval is None:
            interval = interval_model.objects.create(every=every, period="seconds")
        task_model.objects.create(name=name, task=entry["task"], interval=interval, args="[]", kwargs="{}")
        created.append(name)
    if created:
        # A running DatabaseScheduler reloads its schedule when this timestamp moves.
        changes_model.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})
    return created
