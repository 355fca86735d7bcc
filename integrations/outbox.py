"""record(): write one IntegrationSync per integration for an event, inside the caller's transaction."""

import logging

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from integrations import payloads
from integrations.models import EventType, Integration, IntegrationSync, SyncStatus

log = logging.getLogger("integrations.outbox")

_NEXT_SEQUENCE_SQL = """
INSERT INTO integrations_sequencecounter (integration_id, content_type_id, object_id, last)
VALUES (%s, %s, %s, 1)
ON CONFLICT (integration_id, content_type_id, object_id)
DO UPDATE SET last = integrations_sequencecounter.last + 1
RETURNING last
"""


def next_sequence(integration_id: int, content_type_id: int, object_id: str) -> int:
    """Atomic per-object counter; the row lock also makes concurrent writers of one object commit in sequence order."""
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_SEQUENCE_SQL, [integration_id, content_type_id, object_id])
        return cursor.fetchone()[0]


def record(obj, event_type: str, *, changes: dict | None = None, data: dict | None = None) -> list[IntegrationSync]:
    """Write the event's rows (pending if enabled, skipped if disabled) and wake a worker on commit."""
    content_type = ContentType.objects.get_for_model(obj, for_concrete_model=True)
    object_type = content_type.model
    event_name = f"{object_type}.{event_type}"
    data = data if data is not None else payloads.snapshot(obj)
    now = timezone.now()
    rows: list[IntegrationSync] = []
    with transaction.atomic():
        for integration in Integration.objects.all():
            if not integration.wants(event_name):
                continue
            status = SyncStatus.PENDING if integration.enabled else SyncStatus.SKIPPED
            fields = dict(
                payload=data,
                changes=changes or {},
                status=status,
                next_attempt_at=now,
                occurred_at=now,
                last_error="" if integration.enabled else "integration disabled when the event happened",
            )
            key = dict(integration=integration, content_type=content_type, object_id=str(obj.pk))
            if event_type == EventType.CREATED:
                row = _get_or_create_created(key, fields)
                if row is None:
                    continue
            else:
                fields["sequence"] = next_sequence(integration.pk, content_type.pk, str(obj.pk))
                row = IntegrationSync.objects.create(event_type=event_type, **key, **fields)
            rows.append(row)
            log.info(
                "[QUEUE] %s %s sync=%s integration=%s seq=%s", event_name, obj.pk, row.pk, integration.pk, row.sequence
            )
    pending = [r.pk for r in rows if r.status == SyncStatus.PENDING]
    if pending:
        transaction.on_commit(lambda: wake(pending))
    return rows


def _get_or_create_created(key: dict, fields: dict) -> IntegrationSync | None:
    """A second "created" can never exist: the partial unique constraint decides, get_or_create reads the winner."""
    existing = IntegrationSync.objects.filter(event_type=EventType.CREATED, **key).first()
    if existing:
        return None
    fields["sequence"] = next_sequence(key["integration"].pk, key["content_type"].pk, key["object_id"])
    try:
        with transaction.atomic():
            row, created = IntegrationSync.objects.get_or_create(event_type=EventType.CREATED, **key, defaults=fields)
    except IntegrityError:  # a concurrent writer inserted it between our read and our insert
        return None
    return row if created else None


def wake(sync_ids: list[int]) -> None:
    """Send the Celery hint. A broker outage only delays delivery: the sweeper finds the pending rows."""
    from django.conf import settings

    if not settings.SYNC_WAKEUP_ENABLED:
        return
    from integrations.tasks import dispatch_sync

    for sync_id in sync_ids:
        try:
            dispatch_sync.apply_async(args=[sync_id], retry=False)
        except Exception as exc:  # noqa: BLE001 - any broker failure must not break the committed write
            log.warning(
                "[QUEUE] wake-up for sync=%s not sent (%s); the sweeper will deliver it", sync_id, type(exc).__name__
            )
            return
