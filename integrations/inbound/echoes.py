"""Is a deal's stage ours? The stages we sent (noted before each request, answered or not) and the newer-side rule.

Our own deal updates come back as ONCRMDEALUPDATE. A stage we sent explains the deal's stage when the deal was
modified while our request could have been landing (from just before we noted it to the end of the rate-limit wait
and the request's timeouts). Otherwise the stage is a change made in Bitrix24, applied only if it is not older than
the order's last status change here. See docs/bitrix24.md ("Echoes and which side wins")."""

import json
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from integrations.models import EventType, IntegrationSync

SENT_KEPT = 10  # the last stages sent per deal
# DATE_MODIFY has whole seconds, and the portal's clock is not ours: two changes this close are not ordered.
CLOCK_SLACK_SECONDS = 2.0

# One statement per batch of deal writes: append {stage, at} to each link's remote_state.sent, keep the last SENT_KEPT.
_NOTE_SQL = """
UPDATE integrations_externallink AS l
SET remote_state = jsonb_set(
        CASE WHEN jsonb_typeof(l.remote_state) = 'object' THEN l.remote_state ELSE '{}'::jsonb END,
        '{sent}',
        (SELECT COALESCE(jsonb_agg(k.e ORDER BY k.n), '[]'::jsonb) FROM (
            SELECT t.e, t.n FROM jsonb_array_elements(
                CASE WHEN jsonb_typeof(l.remote_state->'sent') = 'array' THEN l.remote_state->'sent' ELSE '[]' END
                || jsonb_build_array(jsonb_build_object('stage', v.stage, 'at', %s::text))
            ) WITH ORDINALITY AS t(e, n) ORDER BY t.n DESC LIMIT %s
        ) AS k)),
    updated_at = %s
FROM unnest(%s::bigint[], %s::text[]) AS v(id, stage)
WHERE l.id = v.id
RETURNING l.id, l.remote_state->'sent'
"""


def stages_sent_note(*, stages: dict[int, str]) -> dict[int, list[dict]]:
    """Before a deal write request: note the stage about to be sent on each link ({link id: STAGE_ID}), committed
    at once (no transaction is held over the request). Returns each link's list of sent stages, to be kept with the
    link state written when the request is answered."""
    if not stages:
        return {}
    now = timezone.now()
    ids = list(stages)
    with connection.cursor() as cursor:
        cursor.execute(_NOTE_SQL, [now.isoformat(), SENT_KEPT, now, ids, [stages[i] for i in ids]])
        rows = cursor.fetchall()
    return {link_id: json.loads(sent) if isinstance(sent, str) else sent for link_id, sent in rows}


def request_window_seconds() -> float:
    """How long after we noted a stage our request can still land: the rate-limit wait, then connect and read."""
    from integrations.targets.bitrix_limits import WAIT_LIMIT_SECONDS

    connect, read = settings.BITRIX_TIMEOUT
    return WAIT_LIMIT_SECONDS + connect + read


def sent_by_us(state: dict, stage: str, modified_at: datetime | None) -> bool:
    """True when the deal's stage is explained by a stage we sent (answered or not). Without the deal's DATE_MODIFY,
    any of the last stages sent counts."""
    slack = timedelta(seconds=CLOCK_SLACK_SECONDS)
    window = timedelta(seconds=request_window_seconds())
    for entry in (state.get("sent") or []) if isinstance(state, dict) else []:
        if not isinstance(entry, dict) or entry.get("stage") != stage:
            continue
        at = parse_time(entry.get("at"))
        if modified_at is None or at is None or at - slack <= modified_at <= at + window + slack:
            return True
    return False


def newer_local_change(order, modified_at: datetime | None) -> datetime | None:
    """The order's last status change here, when it is newer than the deal's DATE_MODIFY (by more than the slack)."""
    if modified_at is None:
        return None
    last = IntegrationSync.objects.filter(
        content_type=ContentType.objects.get_for_model(order),
        object_id=str(order.pk),
        event_type=EventType.STATUS_CHANGED,
    ).aggregate(last=Max("occurred_at"))["last"]
    if last is not None and modified_at + timedelta(seconds=CLOCK_SLACK_SECONDS) <= last:
        return last
    return None


def parse_time(value) -> datetime | None:
    """An ISO 8601 time with its offset (Bitrix24's DATE_MODIFY, our notes); None when absent or unreadable."""
    try:
        parsed = datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else None
