"""record(): write one IntegrationSync per integration for an event, inside the caller's transaction."""

import logging

from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.utils import timezone

from integrations import payloads
from integrations.models import EventType, Integration, IntegrationKind, IntegrationSync, SyncStatus

log = logging.getLogger("integrations.outbox")

_NEXT_SEQUENCES_SQL = """
INSERT INTO integrations_sequencecounter (integration_id, content_type_id, object_id, last)
SELECT integration_id, %s, %s, 1 FROM unnest(%s::bigint[]) AS integration_id
ON CONFLICT (integration_id, content_type_id, object_id)
DO UPDATE SET last = integrations_sequencecounter.last + 1
RETURNING integration_id, last
"""


def next_sequences(integration_ids: list[int], content_type_id: int, object_id: str) -> dict[int, int]:
    """Atomic per-object counters, one round trip for every integration; returns {integration_id: sequence}.

    The row locks (taken in ascending integration id, so concurrent writers cannot deadlock) also make concurrent
    writers of one object commit in sequence order. A created event that turns out to be a duplicate leaves a gap,
    which is harmless: delivery orders by sequence, it never counts on consecutive numbers.
    """
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_SEQUENCES_SQL, [content_type_id, object_id, sorted(integration_ids)])
        return dict(cursor.fetchall())


def record(obj, event_type: str, *, changes: dict | None = None, data: dict | None = None) -> list[IntegrationSync]:
    """Write the event's rows (pending if enabled, skipped if disabled) and wake a worker on commit.

    Round trips are the cost of every save, so: one query for the integrations, one for all sequence numbers,
    then one INSERT for all rows of an update event, or one get_or_create per integration for a created event.
    """
    content_type = ContentType.objects.get_for_model(obj, for_concrete_model=True)
    object_type = content_type.model
    event_name = f"{object_type}.{event_type}"
    integrations = [i for i in Integration.objects.order_by("pk") if i.wants(event_name)]
    if not integrations:
        return []
    data = data if data is not None else payloads.snapshot(obj)
    now = timezone.now()
    object_id = str(obj.pk)
    rows: list[IntegrationSync] = []
    # No savepoint of our own: an error here aborts the caller's transaction, so the object and its events go together.
    with transaction.atomic(savepoint=False):
        sequences = next_sequences([i.pk for i in integrations], content_type.pk, object_id)
        for integration in integrations:
            fields = dict(
                payload=data,
                changes=changes or {},
                status=SyncStatus.PENDING if integration.enabled else SyncStatus.SKIPPED,
                next_attempt_at=now,
                occurred_at=now,
                last_error="" if integration.enabled else "integration disabled when the event happened",
                sequence=sequences[integration.pk],
            )
            key = dict(integration=integration, content_type=content_type, object_id=object_id)
            if event_type == EventType.CREATED:
                row = _get_or_create_created(key, fields)
                if row is not None:
                    rows.append(row)
            else:
                rows.append(IntegrationSync(event_type=event_type, **key, **fields))
        if event_type != EventType.CREATED:
            rows = IntegrationSync.objects.bulk_create(rows)
    for row in rows:
        log.info(
            "%s %s %s sync=%s integration=%s seq=%s",
            queue_prefix(row.integration.kind, object_type, event_type),
            event_name,
            obj.pk,
            row.pk,
            row.integration_id,
            row.sequence,
        )
    pending = [r.pk for r in rows if r.status == SyncStatus.PENDING]
    if pending:
        transaction.on_commit(lambda: wake(pending))
    return rows


_BITRIX_ENTITY = {"order": "DEAL", "user": "CONTACT"}


def queue_prefix(kind: str, object_type: str, event_type: str) -> str:
    """[QUEUE_DEAL] / [QUEUE_DEAL_UPDATE] / [QUEUE_CONTACT] / [QUEUE_CONTACT_UPDATE] for Bitrix24, [QUEUE] otherwise."""
    entity = _BITRIX_ENTITY.get(object_type) if kind == IntegrationKind.BITRIX24 else None
    if entity is None:
        return "[QUEUE]"
    return f"[QUEUE_{entity}]" if event_type == EventType.CREATED else f"[QUEUE_{entity}_UPDATE]"


def _get_or_create_created(key: dict, fields: dict) -> IntegrationSync | None:
    """A second "created" can never exist: the partial unique constraint decides, get_or_create reads the winner
    (it catches the IntegrityError of a concurrent insert inside its own savepoint and returns the existing row)."""
    row, created = IntegrationSync.objects.get_or_create(event_type=EventType.CREATED, **key, defaults=fields)
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
