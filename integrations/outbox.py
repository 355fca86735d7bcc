"""record(): write one IntegrationSync per integration for an event, inside the caller's transaction."""

import logging

from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.utils import timezone

from integrations import payloads
from integrations.models import EventType, Integration, IntegrationKind, IntegrationSync, SyncStatus

log = logging.getLogger("integrations.outbox")

# One round trip: the integrations that want the event (same rule as Integration.wants) and, for each of them, the
# object's next sequence number. The counter rows are locked in ascending integration id, so concurrent writers of one
# object cannot deadlock, and they commit in sequence order. A created event that turns out to be a duplicate leaves a
# gap, which is harmless: delivery orders by sequence, it never counts on consecutive numbers.
_INTEGRATIONS_WITH_SEQUENCES_SQL = """
WITH wanted AS (
    SELECT * FROM integrations_integration
    WHERE (event_filter IS NULL OR event_filter = '[]'::jsonb OR event_filter @> jsonb_build_array(%s::text))
      AND (%s::bigint[] IS NULL OR id = ANY(%s::bigint[]))
), seq AS (
    INSERT INTO integrations_sequencecounter (integration_id, content_type_id, object_id, last)
    SELECT id, %s, %s, 1 FROM wanted ORDER BY id
    ON CONFLICT (integration_id, content_type_id, object_id)
    DO UPDATE SET last = integrations_sequencecounter.last + 1
    RETURNING integration_id, last
)
SELECT wanted.*, seq.last AS next_sequence FROM wanted JOIN seq ON seq.integration_id = wanted.id ORDER BY wanted.id
"""


def integrations_with_sequences(
    event_name: str, content_type_id: int, object_id: str, only: list[int] | None = None
) -> list[Integration]:
    """The integrations that want `event_name` (of `only`, if given), each with `.next_sequence` for this object."""
    params = [event_name, only, only, content_type_id, object_id]
    return list(Integration.objects.raw(_INTEGRATIONS_WITH_SEQUENCES_SQL, params))


def record(
    obj,
    event_type: str,
    *,
    changes: dict | None = None,
    data: dict | None = None,
    integrations: list[Integration] | None = None,
) -> list[IntegrationSync]:
    """Write the event's rows (pending if enabled, skipped if disabled) and wake a worker on commit.

    `integrations` limits the event to those integrations (repairs of one target, e.g. reconcile, must not send an
    old object's create to an integration added since); by default every integration that wants the event gets it.

    Round trips are the cost of every save, so an event costs two statements whatever the number of integrations:
    one for the integrations and their sequence numbers, one INSERT for all the rows. A created event's INSERT is
    deduplicated by the partial unique constraint (see insert_created).
    """
    content_type = ContentType.objects.get_for_model(obj, for_concrete_model=True)
    object_type = content_type.model
    event_name = f"{object_type}.{event_type}"
    object_id = str(obj.pk)
    # No savepoint of our own: an error here aborts the caller's transaction, so the object and its events go together.
    with transaction.atomic(savepoint=False):
        only = None if integrations is None else [i.pk for i in integrations]
        wanted = integrations_with_sequences(event_name, content_type.pk, object_id, only)
        if not wanted:
            return []
        data = data if data is not None else payloads.snapshot(obj)
        now = timezone.now()
        rows = [
            IntegrationSync(
                integration=integration,
                content_type=content_type,
                object_id=object_id,
                event_type=event_type,
                payload=data,
                changes=changes or {},
                status=SyncStatus.PENDING if integration.enabled else SyncStatus.SKIPPED,
                next_attempt_at=now,
                occurred_at=now,
                last_error="" if integration.enabled else "integration disabled when the event happened",
                sequence=integration.next_sequence,
            )
            for integration in wanted
        ]
        if event_type == EventType.CREATED:
            rows = insert_created(rows)
        else:
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


def insert_created(rows: list[IntegrationSync]) -> list[IntegrationSync]:
    """Insert "created" rows; return those inserted. A second "created" can never exist.

    This is get_or_create for a whole event in one statement: the partial unique constraint
    uniq_created_sync_per_object decides, and ON CONFLICT … DO NOTHING is its race-safe form (a concurrent insert
    of the same row waits for the other transaction and then yields, without an IntegrityError, so without the
    savepoint and the SELECT get_or_create needs per row). Rows that already existed are not returned: the event
    was recorded before, and the caller has nothing to wake.
    """
    meta = IntegrationSync._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    values, params = [], []
    for row in rows:
        values.append("(" + ", ".join(["%s"] * len(fields)) + ")")
        params.extend(f.get_db_prep_save(f.pre_save(row, add=True), connection) for f in fields)
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) VALUES {', '.join(values)} "
        "ON CONFLICT (integration_id, content_type_id, object_id) WHERE event_type = 'created' DO NOTHING "
        "RETURNING id, integration_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = {integration_id: pk for pk, integration_id in cursor.fetchall()}
    created = []
    for row in rows:
        if row.integration_id in inserted:
            row.pk = inserted[row.integration_id]
            row._state.adding = False
            row._state.db = connection.alias
            created.append(row)
    return created


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
