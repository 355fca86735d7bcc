"""Celery tasks: they take ids, load, and call one service. Each is safe to run twice."""

import logging
import time

from celery import shared_task
from django.utils import timezone

from integrations import dispatcher, services, tally
from integrations.models import Heartbeat, IntegrationSync

log = logging.getLogger("integrations.worker")


@shared_task(name="integrations.tasks.dispatch_sync", ignore_result=True)
def dispatch_sync(sync_id: int) -> int:
    """Wake-up hint naming one row: deliver a batch of that row's integration. Kept for hints queued before wake-ups
    named the integration (outbox.wake sends dispatch_integration now)."""
    integration_id = IntegrationSync.objects.filter(pk=sync_id).values_list("integration_id", flat=True).first()
    if integration_id is None:
        return 0
    return dispatcher.drain(integration_id=integration_id, max_seconds=20)


@shared_task(name="integrations.tasks.dispatch_integration", ignore_result=True)
def dispatch_integration(integration_id: int) -> int:
    return dispatcher.drain(integration_id=integration_id, max_seconds=20)


@shared_task(name="integrations.tasks.sweep_due_syncs", ignore_result=True)
def sweep_due_syncs() -> list[int]:
    """Re-dispatch due rows and rows whose lease expired: a lost message or a killed worker only delays."""
    beat_seen("sweep_due_syncs")
    tally.compact()
    services.sync_waiting_repair()
    ids = dispatcher.integrations_with_due_work()
    for integration_id in ids:
        dispatch_integration.delay(integration_id)
    return ids


@shared_task(name="integrations.tasks.cleanup_sync_history", ignore_result=True)
def cleanup_sync_history() -> dict:
    from integrations.retention import cleanup_history

    beat_seen("cleanup_sync_history")
    return cleanup_history()


@shared_task(name="integrations.tasks.reconcile_bitrix", ignore_result=True)
def reconcile_bitrix() -> dict:
    from integrations.reconcile import reconcile_all

    beat_seen("reconcile_bitrix")
    return reconcile_all()


@shared_task(name="integrations.tasks.bitrix_catchup", ignore_result=True)
def bitrix_catchup() -> list[dict]:
    """Deal changes whose event post never reached us, read back from the portal (integrations/inbound/catchup.py)."""
    from integrations.inbound.catchup import catchup_all

    beat_seen("bitrix_catchup")
    return catchup_all()


BACKFILL_TASK_SECONDS = 150  # well inside CELERY_TASK_SOFT_TIME_LIMIT, portal reads included


@shared_task(name="integrations.tasks.backfill_integration", ignore_result=True)
def backfill_integration(integration_id: int) -> dict:
    """Admin action of a big shop: check, adopt and queue in the worker (the rows are then delivered as usual)."""
    from integrations.backfill import BackfillError, backfill_start
    from integrations.models import Integration

    integration = Integration.objects.filter(pk=integration_id).first()
    if integration is None:
        return {}
    try:
        run = backfill_start(integration=integration, until=time.monotonic() + BACKFILL_TASK_SECONDS)
    except BackfillError as exc:
        log.warning("[WORKER] backfill integration=%s not started: %s", integration_id, exc)
        return {}
    if not run.finished:  # within the task time limit; the next task goes on where this one stopped (resumable)
        log.info("[WORKER] backfill integration=%s goes on in a new task: %s", integration_id, run.counts)
        backfill_integration.apply_async(args=[integration_id], retry=False)
    return run.counts


@shared_task(name="integrations.tasks.process_inbound", ignore_result=True)
def process_inbound(inbound_id: int) -> str:
    from integrations.inbound.processing import inbound_process

    return inbound_process(inbound_id=inbound_id)


@shared_task(name="integrations.tasks.requeue_stale_inbound", ignore_result=True)
def requeue_stale_inbound() -> int:  # returns how many were re-enqueued
    """Inbound calls whose Celery message was lost (or that failed retryably) are enqueued again."""
    from integrations.inbound.services import inbound_requeue_stale

    beat_seen("requeue_stale_inbound")
    return len(inbound_requeue_stale())


@shared_task(name="integrations.tasks.beat_heartbeat", ignore_result=True)
def beat_heartbeat() -> None:
    beat_seen("beat")


def beat_seen(name: str) -> None:
    Heartbeat.objects.update_or_create(name=name, defaults={"kind": "beat", "seen_at": timezone.now()})
