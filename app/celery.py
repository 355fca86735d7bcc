"""The Celery app; settings come from Django settings (CELERY_*), the beat schedule from django-celery-beat."""

import os
import warnings

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, beat_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "app.settings")

if os.environ.get("EMBEDDED_RUN"):  # `./dev run` on a developer's machine, often as root: no warning per start
    from celery.exceptions import SecurityWarning

    warnings.filterwarnings("ignore", category=SecurityWarning)

app = Celery("app")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Defaults; django-celery-beat stores them (see integrations/migrations) so operators can edit them in the admin.
# They are deliberately not in app.conf.beat_schedule: DatabaseScheduler writes that over the stored rows at every
# start, which would undo an operator's edit (e.g. a faster sweep) on the next deploy.
BEAT_SCHEDULE = {
    "sweep_due_syncs": {"task": "integrations.tasks.sweep_due_syncs", "every_seconds": 5},
    "cleanup_sync_history": {"task": "integrations.tasks.cleanup_sync_history", "every_seconds": 24 * 3600},
    "reconcile_bitrix": {"task": "integrations.tasks.reconcile_bitrix", "every_seconds": 3600},
    "requeue_stale_inbound": {"task": "integrations.tasks.requeue_stale_inbound", "every_seconds": 60},
    "bitrix_catchup": {"task": "integrations.tasks.bitrix_catchup", "every_seconds": 300},
    "heartbeat_beat": {"task": "integrations.tasks.beat_heartbeat", "every_seconds": 30},
}


@beat_init.connect
def install_missing_beat_defaults(**kwargs) -> None:
    """Beat start-up: store any default task missing from the database (existing rows are left as edited)."""
    from integrations.beat_defaults import install_beat_schedule

    install_beat_schedule()


@after_setup_logger.connect
@after_setup_task_logger.connect
def mask_secrets_in_celery_logs(logger=None, **kwargs) -> None:
    """Celery replaces the root logger's handlers with its own: they get the secret-masking filter too."""
    from app.logging import install_filter

    install_filter(logger)
