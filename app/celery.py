"""The Celery app; settings come from Django settings (CELERY_*), the beat schedule from django-celery-beat."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "app.settings")

app = Celery("app")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Defaults; django-celery-beat stores them (see integrations/migrations) so operators can edit them in the admin.
BEAT_SCHEDULE = {
    "sweep_due_syncs": {"task": "integrations.tasks.sweep_due_syncs", "every_seconds": 5},
    "cleanup_sync_history": {"task": "integrations.tasks.cleanup_sync_history", "every_seconds": 24 * 3600},
    "reconcile_bitrix": {"task": "integrations.tasks.reconcile_bitrix", "every_seconds": 3600},
    "requeue_stale_inbound": {"task": "integrations.tasks.requeue_stale_inbound", "every_seconds": 60},
    "heartbeat_beat": {"task": "integrations.tasks.beat_heartbeat", "every_seconds": 30},
}
app.conf.beat_schedule = {
    name: {"task": entry["task"], "schedule": float(entry["every_seconds"])} for name, entry in BEAT_SCHEDULE.items()
}
