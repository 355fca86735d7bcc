"""record(): write one IntegrationSync per integration for an event, inside the caller's transaction."""

import logging

from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.utils import timezone

from integrations import payloads
from integrations.background import BackgroundSender
from integrations.models import EventType, Integration, IntegrationKind, IntegrationSync, SyncStatus

log = logging.getLogger("integrations.outbox")

DISABLED_REASON = "integration disabled when the event happened"

# Columns whose value differs per integration; every other column takes the event's common value (one parameter).
_PER_ROW = {
    "integration_id": "wanted.id",
    "sequence": "seq.last",
    "event_id": "gen_random_uuid()",
    "status": "CASE WHEN wanted.enabled THEN %(pending)s ELSE %(skipped)s END",
    "last_error": "CASE WHEN wanted.enabled THEN '' ELSE %(disabled_reason)s END",
}

# One statement per event, whatever the number of integrations:
# - wanted: the integrations that want the event (the same rule as Integration.wants), optionally only some of them;
# - seq: the object's next sequence number per integration. The counter rows are locked in ascending integration id,
#   so concurrent writers of one object cannot deadlock, and they commit in sequence order;
# - rows: the IntegrationSync rows. A created event is get_or_create for all its rows at once: the partial unique
#   constraint uniq_created_sync_per_object decides, and ON CONFLICT … DO NOTHING is its race-safe form (a concurrent
#   insert of the same row waits for the other transaction and then yields, with no IntegrityError, so without the
#   savepoint and SELECT that get_or_create needs per row). A duplicate created event leaves a gap in the sequence,
#   which is harmless: delivery orders by sequence, it never counts on consecutive numbers.
_RECORD_SQL = """
WITH wanted AS (
    SELECT id, kind, enabled FROM integrations_integration
    WHERE (event_filter IS NULL OR event_filter = '[]'::jsonb
           OR event_filter @> jsonb_build_array(%(event_name)s::text))
      AND (%(only)s::bigint[] IS NULL OR id = ANY(%(only)s::bigint[]))
), seq AS (
    INSERT INTO integrations_sequencecounter (integration_id, content_type_id, object_id, last)
    SELECT id, %(content_type_id)s, %(object_id)s, 1 FROM wanted ORDER BY id
    ON CONFLICT (integration_id, content_type_id, object_id)
    DO UPDATE SET last = integrations_sequencecounter.last + 1
    RETURNING integration_id, last
), rows AS (
    INSERT INTO integrations_integrationsync ({columns})
    SELECT {values} FROM wanted JOIN seq ON seq.integration_id = wanted.id ORDER BY wanted.id
    {on_conflict}
    RETURNING id, integration_id, sequence, event_id, status, last_error
)
SELECT rows.id, rows.integration_id, rows.sequence, rows.event_id, rows.status, rows.last_error, wanted.kind
FROM rows JOIN wanted ON wanted.id = rows.integration_id ORDER BY rows.integration_id
"""
_CREATED_CONFLICT = "ON CONFLICT (integration_id, content_type_id, object_id) WHERE event_type = 'created' DO NOTHING"
_statements: dict[bool, tuple[str, list]] = {}


def _statement(created: bool) -> tuple[str, list]:
    """The record statement and the fields it takes a common value for (built once per process)."""
    if created not in _statements:
        quote = connection.ops.quote_name
        fields = [f for f in IntegrationSync._meta.concrete_fields if not f.primary_key]
        common = [f for f in fields if f.column not in _PER_ROW]
        values = [_PER_ROW.get(f.column, f"%({f.column})s") for f in fields]
        sql = _RECORD_SQL.format(
            columns=", ".join(quote(f.column) for f in fields),
            values=", ".join(values),
            on_conflict=_CREATED_CONFLICT if created else "",
        )
        _statements[created] = (sql, common)
    return _statements[created]


def record(
    obj,
    event_type: str,
    *,
    changes: dict | None = None,
    data: dict | None = None,
    integrations: list[Integration] | None = None,
    backfill: bool = False,
) -> list[IntegrationSync]:
    """Write the event's rows (pending if enabled, skipped if disabled) and wake a worker on commit.

    `integrations` limits the event to those integrations (repairs of one target, e.g. reconcile, must not send an
    old object's create to an integration added since); by default every integration that wants the event gets it.
    `backfill` marks the rows as onboarding of an object older than the integration (integrations/backfill.py).

    The rows are written by one statement (see _RECORD_SQL): round trips are the cost of every save. Rows of a
    created event that already existed are not returned: the event was recorded before, there is nothing to wake.
    """
    content_type = ContentType.objects.get_for_model(obj, for_concrete_model=True)
    object_type = content_type.model
    event_name = f"{object_type}.{event_type}"
    now = timezone.now()
    # The event's common values go through the model's own fields (defaults, JSON encoding, time zones).
    template = IntegrationSync(
        content_type_id=content_type.pk,
        object_id=str(obj.pk),
        event_type=event_type,
        payload=data if data is not None else payloads.snapshot(obj),
        changes=changes or {},
        next_attempt_at=now,
        occurred_at=now,
        backfill=backfill,
    )
    sql, common = _statement(event_type == EventType.CREATED)
    params = {f.column: f.get_db_prep_save(f.pre_save(template, add=True), connection) for f in common}
    params.update(
        event_name=event_name,
        only=None if integrations is None else [i.pk for i in integrations],
        pending=SyncStatus.PENDING,
        skipped=SyncStatus.SKIPPED,
        disabled_reason=DISABLED_REASON,
    )
    # No savepoint of our own: an error here aborts the caller's transaction, so the object and its events go together.
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(sql, params)
        returned = cursor.fetchall()
    rows = []
    for pk, integration_id, sequence, event_id, status, last_error, kind in returned:
        row = IntegrationSync(
            pk=pk,
            integration_id=integration_id,
            sequence=sequence,
            event_id=event_id,
            status=status,
            last_error=last_error,
            **{f.attname: getattr(template, f.attname) for f in common},
        )
        row._state.adding = False
        row._state.db = connection.alias
        rows.append(row)
        log.info(
            "%s %s %s sync=%s integration=%s seq=%s",
            queue_prefix(kind, object_type, event_type),
            event_name,
            obj.pk,
            pk,
            integration_id,
            sequence,
        )
    waiting = [r.integration_id for r in rows if r.status == SyncStatus.PENDING]
    if waiting:
        transaction.on_commit(lambda: wake(waiting))
    return rows


_BITRIX_ENTITY = {"order": "DEAL", "user": "CONTACT"}


def queue_prefix(kind: str, object_type: str, event_type: str) -> str:
    """[QUEUE_DEAL] / [QUEUE_DEAL_UPDATE] / [QUEUE_CONTACT] / [QUEUE_CONTACT_UPDATE] for Bitrix24, [QUEUE] otherwise."""
    entity = _BITRIX_ENTITY.get(object_type) if kind == IntegrationKind.BITRIX24 else None
    if entity is None:
        return "[QUEUE]"
    return f"[QUEUE_{entity}]" if event_type == EventType.CREATED else f"[QUEUE_{entity}_UPDATE]"


def wake(integration_ids: list[int]) -> None:
    """After commit: ask a worker to deliver these integrations' due rows. Never waits on the broker: a background
    thread sends the hint, one per integration however many rows are waiting. A lost hint only delays: the sweeper
    finds the pending rows."""
    from django.conf import settings

    if settings.SYNC_WAKEUP_ENABLED:
        _wakeups.submit(integration_ids)


def _send_wakeups(integration_ids: list[int]) -> None:
    from integrations.tasks import dispatch_integration

    for integration_id in dict.fromkeys(integration_ids):
        try:
            dispatch_integration.apply_async(args=[integration_id], retry=False)
        except Exception as exc:  # noqa: BLE001 - a broker failure must not end the sender thread
            log.warning(
                "[QUEUE] wake-up for integration=%s not sent (%s); the sweeper will deliver its rows",
                integration_id,
                type(exc).__name__,
            )
            return


# Rows committed while a hint is being sent (or while the broker is down or hung, within its bounded timeouts) wait
# for the next send, and an integration already waiting is not queued twice: at most one hint per integration
# waits in each process, and an outage costs one failed send per broker timeout, not one per write.
_wakeups = BackgroundSender("sync-wakeup", _send_wakeups, coalesce=True)
