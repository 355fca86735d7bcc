"""Delete old history in small batches, each its own short transaction, so no statement holds locks for long.

Finished rows (synced, superseded, skipped) go after SYNC_RETENTION_DAYS, failed/dead after SYNC_FAILED_RETENTION_DAYS.
Open rows (pending, in_progress, retrying) and inbound calls not yet processed (received) are never deleted.
Attempts are deleted in SQL with their batch: Django's Python-side cascade would load every related row first.
"""

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from integrations.models import Heartbeat, InboundStatus, SyncStatus

log = logging.getLogger("integrations.retention")
# Plain strings: psycopg would dump an Enum member by its name.
SYNC_DONE = [s.value for s in (SyncStatus.SYNCED, SyncStatus.SUPERSEDED, SyncStatus.SKIPPED)]
SYNC_FAILED = [s.value for s in (SyncStatus.FAILED, SyncStatus.DEAD)]
INBOUND_DONE = [
    s.value for s in (InboundStatus.PROCESSED, InboundStatus.IGNORED, InboundStatus.DUPLICATE, InboundStatus.REJECTED)
]
INBOUND_FAILED = [InboundStatus.FAILED.value]
WORKER_HEARTBEAT_DAYS = 7  # workers with changing hostnames (containers) would otherwise pile up on the status page

# The batch is a MATERIALIZED CTE: as an `IN (sub-select … LIMIT n FOR UPDATE)` PostgreSQL may re-scan the sub-select
# once per outer row, and each re-scan skips the rows this statement already deleted and locks the next ones, so the
# LIMIT would not bound the batch. SKIP LOCKED passes over rows being replayed right now; the status condition is
# repeated on the outer statement so a row made pending meanwhile is re-checked and kept.
# updated_at is when a finished row reached its final status (and is indexed with status).
_DELETE_SYNCS = """
WITH batch AS MATERIALIZED (
    SELECT id FROM integrations_integrationsync
    WHERE status = ANY(%(statuses)s) AND updated_at < %(cutoff)s
    LIMIT %(limit)s FOR UPDATE SKIP LOCKED
)
DELETE FROM integrations_integrationsync AS s USING batch
WHERE s.id = batch.id AND s.status = ANY(%(statuses)s) AND s.updated_at < %(cutoff)s
RETURNING s.id
"""
_DELETE_ATTEMPTS = "DELETE FROM integrations_syncattempt WHERE sync_id = ANY(%s)"
# superseded_by is SET_NULL in Django only; the database constraint would reject the delete at commit.
_UNLINK_SUPERSEDED = "UPDATE integrations_integrationsync SET superseded_by_id = NULL WHERE superseded_by_id = ANY(%s)"
_DELETE_INBOUND = """
WITH batch AS MATERIALIZED (
    SELECT id FROM integrations_inboundwebhook
    WHERE status = ANY(%(statuses)s) AND received_at < %(cutoff)s
    LIMIT %(limit)s FOR UPDATE SKIP LOCKED
)
DELETE FROM integrations_inboundwebhook AS i USING batch
WHERE i.id = batch.id AND i.status = ANY(%(statuses)s)
"""


def _delete_sync_batch(statuses: list[str], cutoff: datetime, limit: int) -> tuple[int, int]:
    """One transaction: syncs, their attempts, references to them. Returns (syncs, attempts) deleted."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_DELETE_SYNCS, {"statuses": statuses, "cutoff": cutoff, "limit": limit})
        ids = [row[0] for row in cursor.fetchall()]
        if not ids:
            return 0, 0
        cursor.execute(_DELETE_ATTEMPTS, [ids])
        attempts = cursor.rowcount
        cursor.execute(_UNLINK_SUPERSEDED, [ids])
    return len(ids), attempts


def _delete_inbound_batch(statuses: list[str], cutoff: datetime, limit: int) -> tuple[int, int]:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_DELETE_INBOUND, {"statuses": statuses, "cutoff": cutoff, "limit": limit})
        return cursor.rowcount, 0


def _in_batches(delete_batch, statuses, cutoff, batch_size, deadline, totals: dict, key: str) -> None:
    while time.monotonic() < deadline:
        deleted, attempts = delete_batch(statuses, cutoff, batch_size)
        if not deleted:
            return
        totals[key] += deleted
        totals["attempts"] += attempts
        totals["batches"] += 1
        if deleted < batch_size:
            return
    totals["complete"] = False


def cleanup_history(batch_size: int = 5000, now: datetime | None = None, max_seconds: float = 200.0) -> dict:
    """Delete expired history; stops after max_seconds (below the task's time limit) and the next run goes on."""
    now = now or timezone.now()
    done_cutoff = now - timedelta(days=settings.SYNC_RETENTION_DAYS)
    failed_cutoff = now - timedelta(days=settings.SYNC_FAILED_RETENTION_DAYS)
    deadline = time.monotonic() + max_seconds
    totals = {"syncs": 0, "attempts": 0, "inbound": 0, "heartbeats": 0, "batches": 0, "complete": True}
    _in_batches(_delete_sync_batch, SYNC_DONE, done_cutoff, batch_size, deadline, totals, "syncs")
    _in_batches(_delete_sync_batch, SYNC_FAILED, failed_cutoff, batch_size, deadline, totals, "syncs")
    _in_batches(_delete_inbound_batch, INBOUND_DONE, done_cutoff, batch_size, deadline, totals, "inbound")
    _in_batches(_delete_inbound_batch, INBOUND_FAILED, failed_cutoff, batch_size, deadline, totals, "inbound")
    totals["heartbeats"], _ = Heartbeat.objects.filter(
        kind="worker", seen_at__lt=now - timedelta(days=WORKER_HEARTBEAT_DAYS)
    ).delete()
    log.info("[RETENTION] %s", totals)
    return totals
