"""The only writers of IntegrationSync, SyncAttempt and ExternalLink: claim, complete, replay."""

import json
import logging
import socket
import uuid
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from integrations import policy
from integrations.models import (
    OPEN_STATUSES,
    AttemptOutcome,
    EventType,
    ExternalLink,
    Integration,
    IntegrationSync,
    SyncAttempt,
    SyncStatus,
)
from integrations.policy import Verdict
from integrations.targets.base import Claimed, Outcome

log = logging.getLogger("integrations.worker")
WORKER_NAME = f"{socket.gethostname()}:{__import__('os').getpid()}"
PAUSE_AFTER_FAILURES = 20
MAX_PAUSE_SECONDS = 3600

# Head-of-line rows only: a row is claimable when no earlier row of the same object and integration is still open.
# The due conditions sit on the locked table itself so that PostgreSQL re-checks them after waiting for a
# concurrent claimer (READ COMMITTED re-evaluation). The open rows are read in id order through sync_claim_idx and
# the earlier open row through sync_open_object_idx, so finished history is never walked; `now` is
# statement_timestamp() (stable, one value for the statement), not the volatile clock_timestamp(). Rows held back by
# an earlier open row of their object are marked `waiting` first (_MARK_WAITING_SQL) and then no longer read.
# A row whose lease expired is taken over only once one more worst-case call (`grace`) has passed: a request its
# holder sent just before the end of the lease has then surely ended, so a lookup sees what it did.
_CLAIM_SQL = """
WITH picked AS (
    SELECT s.id, s.status AS old_status, s.claim_token AS old_token, s.updated_at AS old_claimed_at
    FROM integrations_integrationsync s
    WHERE s.integration_id = %(integration)s AND s.status IN ('pending', 'in_progress', 'retrying') AND NOT s.waiting
      AND ((s.status IN ('pending', 'retrying') AND s.next_attempt_at <= statement_timestamp())
           OR (s.status = 'in_progress'
               AND s.lease_expires_at < statement_timestamp() - %(grace)s * interval '1 second'))
      AND NOT EXISTS (
        SELECT 1 FROM integrations_integrationsync e
        WHERE e.content_type_id = s.content_type_id AND e.object_id = s.object_id
          AND e.integration_id = s.integration_id AND e.sequence < s.sequence
          AND e.status IN ('pending', 'in_progress', 'retrying')
      )
    ORDER BY s.id
    LIMIT %(limit)s
    FOR UPDATE OF s SKIP LOCKED
)
UPDATE integrations_integrationsync AS u
SET status = 'in_progress', attempts = u.attempts + 1,
    lease_expires_at = clock_timestamp() + %(lease)s * interval '1 second',
    claim_token = %(token)s, updated_at = clock_timestamp()
FROM picked
WHERE u.id = picked.id
RETURNING u.id, picked.old_status, picked.old_token, picked.old_claimed_at, u.attempts
"""
# The first due rows in claim order (the claim's window); those behind the lowest open row of their object are
# marked `waiting`. That row is share-locked (SKIP LOCKED: never a wait, so never a deadlock): it cannot close before
# this commits, and its closing then clears the mark of the next row (trigger, migration 0011); a row being closed
# right now is skipped, so nothing is marked on its account. Returns (rows in the window, rows marked).
_MARK_WAITING_SQL = """
WITH win AS MATERIALIZED (
    SELECT s.id, s.content_type_id, s.object_id, s.sequence
    FROM integrations_integrationsync s
    WHERE s.integration_id = %(integration)s AND s.status IN ('pending', 'in_progress', 'retrying') AND NOT s.waiting
      AND s.status IN ('pending', 'retrying') AND s.next_attempt_at <= statement_timestamp()
    ORDER BY s.id
    LIMIT %(window)s
    FOR UPDATE OF s SKIP LOCKED
), holders AS MATERIALIZED (
    SELECT e.content_type_id, e.object_id, e.sequence
    FROM (SELECT DISTINCT content_type_id, object_id FROM win) AS o
    CROSS JOIN LATERAL (
        SELECT x.id FROM integrations_integrationsync x
        WHERE x.integration_id = %(integration)s AND x.content_type_id = o.content_type_id
          AND x.object_id = o.object_id AND x.status IN ('pending', 'in_progress', 'retrying')
        ORDER BY x.sequence LIMIT 1) AS lowest
    JOIN integrations_integrationsync e ON e.id = lowest.id
    WHERE e.status IN ('pending', 'in_progress', 'retrying')
    FOR SHARE OF e SKIP LOCKED
), marked AS (
    UPDATE integrations_integrationsync u SET waiting = true
    FROM win w
    WHERE u.id = w.id AND EXISTS (
        SELECT 1 FROM holders h
        WHERE h.content_type_id = w.content_type_id AND h.object_id = w.object_id AND h.sequence < w.sequence)
    RETURNING u.id
)
SELECT (SELECT count(*) FROM win), (SELECT count(*) FROM marked)
"""
LOST_ROUND = (
    "no outcome recorded: the worker holding the lease stopped (killed, crashed, hung); the request may have been sent"
)


def sync_claim_due(
    *, integration: Integration, limit: int = 50, coalesce: bool = False, takeover_grace: float = 0.0
) -> list[Claimed]:
    """Claim due head-of-line rows with SKIP LOCKED and a lease; commits before any HTTP happens.

    A row taken over from an expired lease (expired more than `takeover_grace` seconds ago: the target's worst-case
    call) gets the lost round written down as an `unknown` attempt first, so the history shows that a worker ran and
    never reported (and which claim token its requests carried)."""
    token = uuid.uuid4()
    with transaction.atomic():
        _mark_waiting(integration_id=integration.pk, wanted=limit)
        with connection.cursor() as cursor:
            cursor.execute(
                _CLAIM_SQL,
                {
                    "lease": settings.SYNC_LEASE_SECONDS,
                    "grace": takeover_grace,
                    "token": token,
                    "integration": integration.pk,
                    "limit": limit,
                },
            )
            picked = cursor.fetchall()
        lost = [
            SyncAttempt(
                sync_id=pk,
                number=attempts - 1,
                started_at=claimed_at,
                request_summary="lease expired",
                error_class="LeaseExpired",
                error_message=LOST_ROUND,
                outcome=AttemptOutcome.UNKNOWN,
                claim_token=old_token,
            )
            for pk, old_status, old_token, claimed_at, attempts in picked
            if old_status == SyncStatus.IN_PROGRESS
        ]
        if lost:
            SyncAttempt.objects.bulk_create(lost)
            log.warning("[WORKER] integration=%s took over %s rows whose lease expired", integration.pk, len(lost))
    ids = [row[0] for row in picked]
    if not ids:
        return []
    rows = list(IntegrationSync.objects.filter(pk__in=ids).select_related("content_type").order_by("id"))
    if not coalesce:
        return [Claimed(sync=row, data=row.payload) for row in rows]
    return _with_followers(rows)


def _mark_waiting(*, integration_id: int, wanted: int, max_rounds: int = 1000) -> int:
    """Mark held-back rows at the front of the line until it starts with `wanted` claimable rows; returns rows marked.

    Runs in the claim's transaction (one commit per claim); a pile-up behind one object is marked once, a window at
    a time, and its share locks are held until the claim commits."""
    total = 0
    for _ in range(max_rounds):
        with transaction.atomic(savepoint=False), connection.cursor() as cursor:
            cursor.execute(_MARK_WAITING_SQL, {"integration": integration_id, "window": 2 * wanted})
            seen, marked = cursor.fetchone()
        total += marked
        if not marked or seen < 2 * wanted or seen - marked >= wanted:
            break
    return total


# Safety net for the one case the trigger cannot see: two transactions closing two open rows of one object at once
# (each still sees the other's row open). Only the first waiting row of an object can have lost its blocker.
_WAITING_REPAIR_SQL = """
UPDATE integrations_integrationsync u SET waiting = false
FROM (SELECT DISTINCT ON (integration_id, content_type_id, object_id)
             id, integration_id, content_type_id, object_id, sequence
      FROM integrations_integrationsync WHERE waiting
      ORDER BY integration_id, content_type_id, object_id, sequence) AS head
WHERE u.id = head.id AND u.waiting AND NOT EXISTS (
    SELECT 1 FROM integrations_integrationsync e
    WHERE e.integration_id = head.integration_id AND e.content_type_id = head.content_type_id
      AND e.object_id = head.object_id AND e.sequence < head.sequence
      AND e.status IN ('pending', 'in_progress', 'retrying'))
RETURNING u.id
"""


def sync_waiting_repair() -> int:
    """Clear `waiting` on rows no open earlier row holds back any more (the periodic sweep runs it)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_WAITING_REPAIR_SQL)
        return len(cursor.fetchall())


# Extends the lease of the round's rows that are still its own; rows taken over (another claim token) are not.
_EXTEND_LEASE_SQL = """
UPDATE integrations_integrationsync
SET lease_expires_at = clock_timestamp() + %(lease)s * interval '1 second'
WHERE id = ANY(%(ids)s) AND claim_token = %(token)s AND status = 'in_progress'
RETURNING id
"""


def sync_lease_extend(*, ids: list[int], token, seconds: float) -> set[int]:
    """Renew the lease of a round's rows from now; returns the ids still held by `token` (committed at once)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_EXTEND_LEASE_SQL, {"lease": seconds, "ids": list(ids), "token": token})
        return {row[0] for row in cursor.fetchall()}


def _with_followers(rows: list[IntegrationSync]) -> list[Claimed]:
    """Fold later pending updates of the same object into each delivery (state sync needs only the latest).

    One query for the whole batch: every row of the claimed objects from the claimed sequence on. The newest
    non-delete snapshot among them is what gets sent, so a replayed old row cannot roll the remote state back."""
    later_of: dict[tuple, list] = defaultdict(list)
    if rows:
        wanted = Q()
        for row in rows:
            wanted |= Q(content_type_id=row.content_type_id, object_id=row.object_id, sequence__gt=row.sequence)
        later = (
            IntegrationSync.objects.filter(wanted, integration_id=rows[0].integration_id)
            .order_by("sequence")
            .values_list("content_type_id", "object_id", "id", "event_type", "status", "payload")
        )
        for ct, oid, pk, event_type, status, payload in later:
            later_of[(ct, oid)].append((pk, event_type, status, payload))
    claimed = []
    for row in rows:
        followers, data = [], row.payload
        if row.event_type != EventType.DELETED:
            stopped = False
            for pk, event_type, status, payload in later_of[(row.content_type_id, row.object_id)]:
                if status in (SyncStatus.PENDING, SyncStatus.RETRYING) and not stopped:
                    if event_type in (EventType.DELETED, EventType.CREATED):
                        stopped = True  # a delete (or a re-create) is its own delivery
                    else:
                        followers.append(pk)
                if event_type != EventType.DELETED:
                    data = payload
        claimed.append(Claimed(sync=row, data=data, followers=followers))
    return claimed


def sync_complete(*, claimed: Claimed, outcome: Outcome, started_at) -> IntegrationSync | None:
    """Record the attempt and the new status; a row whose lease was taken over is not overwritten."""
    return sync_complete_many(results=[(claimed, outcome)], started_at=started_at)[0]


# One statement for the whole batch (bulk_update's CASE expressions cost more than the deliveries themselves).
_COMPLETE_SQL = """
UPDATE integrations_integrationsync AS s
SET status = v.status, synced_at = v.synced_at, last_error = v.last_error, remote_id = v.remote_id,
    attempts = v.attempts, next_attempt_at = v.next_attempt_at,
    claim_token = NULL, lease_expires_at = NULL, updated_at = %s
FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::int[], %s::timestamptz[])
    AS v(id, status, synced_at, last_error, remote_id, attempts, next_attempt_at)
WHERE s.id = v.id
"""

# Links of freshly created remote objects, in one statement; rows that conflict take the careful per-row path.
_INSERT_LINKS_SQL = """
INSERT INTO integrations_externallink
    (integration_id, content_type_id, object_id, remote_id, remote_state, created_at, updated_at)
SELECT %s, v.ct, v.oid, v.rid, v.state::jsonb, %s, %s
FROM unnest(%s::int[], %s::text[], %s::text[], %s::text[]) AS v(ct, oid, rid, state)
ON CONFLICT DO NOTHING
RETURNING content_type_id, object_id
"""


def sync_complete_many(*, results: list[tuple[Claimed, Outcome]], started_at) -> list[IntegrationSync | None]:
    """Complete one claimed batch (one integration) in one transaction: the rows are locked once, the attempts go in
    one INSERT, the rows in one UPDATE and the integration's bookkeeping in one more. Returns the row per result,
    None where the lease was lost (the result is then kept as an attempt only)."""
    if not results:
        return []
    now = timezone.now()
    with transaction.atomic():
        locked = {
            row.pk: row
            for row in IntegrationSync.objects.select_for_update()
            .filter(pk__in=[claimed.id for claimed, _ in results])
            .order_by("pk")
        }
        SyncAttempt.objects.bulk_create([_attempt(claimed.sync, outcome, started_at) for claimed, outcome in results])
        integration_id = results[0][0].sync.integration_id
        completed: list[IntegrationSync | None] = []
        for claimed, _ in results:
            row = locked.get(claimed.id)
            if row is None or row.claim_token != claimed.sync.claim_token:
                log.warning("[WORKER] sync=%s lease lost before completion; result kept as an attempt only", claimed.id)
                row = None
            completed.append(row)
        linked = _insert_new_links(
            integration_id, [(r, o) for r, (_, o) in zip(completed, results, strict=True) if r], now
        )
        disable = ""
        for row, (claimed, outcome) in zip(completed, results, strict=True):
            if row is not None:
                _apply_outcome(row, claimed, outcome, now, linked=row.pk in linked)
                row.claim_token, row.lease_expires_at, row.updated_at = None, None, now
                disable = disable or outcome.disable_integration
        done = [row for row in completed if row is not None]
        with connection.cursor() as cursor:
            cursor.execute(
                _COMPLETE_SQL,
                [
                    now,
                    [r.pk for r in done],
                    [r.status for r in done],
                    [r.synced_at for r in done],
                    [r.last_error for r in done],
                    [r.remote_id for r in done],
                    [r.attempts for r in done],
                    [r.next_attempt_at for r in done],
                ],
            )
        # Last, so the integration row is locked only for the end of the transaction.
        _count_round(integration_id, [outcome for _, outcome in results], now, disable=disable)
    return completed


# The integration's bookkeeping for one round in one statement: every right-hand side reads the row as it was, and
# the UPDATE's row lock makes concurrent rounds count one after the other (no lost increments, no operator edit of
# other fields overwritten). An endpoint failing PAUSE_AFTER_FAILURES rounds in a row is paused for 30 s, doubling per
# further failed round, capped at MAX_PAUSE_SECONDS, instead of being hammered (visible in admin and sync_status).
_COUNT_ROUND_SQL = """
UPDATE integrations_integration SET
    last_success_at = CASE WHEN %(succeeded)s THEN %(now)s ELSE last_success_at END,
    last_failure_at = CASE WHEN %(failed)s THEN %(now)s ELSE last_failure_at END,
    consecutive_failures = CASE
        WHEN %(succeeded)s THEN 0 WHEN %(failed)s THEN consecutive_failures + 1 ELSE consecutive_failures END,
    paused_until = CASE
        WHEN %(succeeded)s THEN NULL
        WHEN %(failed)s AND consecutive_failures + 1 >= %(pause_after)s THEN %(now)s + make_interval(
            secs => LEAST(30 * power(2, LEAST(consecutive_failures + 1 - %(pause_after)s, 7)), %(max_pause)s))
        ELSE paused_until END,
    enabled = enabled AND NOT %(disable)s,
    disabled_reason = CASE WHEN %(disable)s THEN %(disabled_reason)s ELSE disabled_reason END,
    updated_at = %(now)s
WHERE id = %(id)s
"""


def _count_round(integration_id: int, outcomes: list[Outcome], now, *, disable: str = "") -> None:
    """The integration's success/failure bookkeeping for one delivery round. The round counts once towards pausing,
    however many rows it carried (one failed batch call of 100 rows is one failure of the endpoint, not 100), and
    any success ends the streak. Skipped rows and deferrals (not the endpoint's fault) count neither way.
    `disable`: the reason to disable the integration (e.g. n8n answered 410 Gone), if any."""
    succeeded = any(o.verdict == Verdict.OK and not o.skip for o in outcomes)
    failed = any(o.verdict in (Verdict.RETRYABLE, Verdict.UNKNOWN, Verdict.TERMINAL) and not o.skip for o in outcomes)
    if not (succeeded or failed or disable):
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _COUNT_ROUND_SQL,
            {
                "succeeded": succeeded,
                "failed": failed,
                "now": now,
                "pause_after": PAUSE_AFTER_FAILURES,
                "max_pause": MAX_PAUSE_SECONDS,
                "disable": bool(disable),
                "disabled_reason": disable[:255],
                "id": integration_id,
            },
        )


def _insert_new_links(integration_id: int, results: list[tuple[IntegrationSync, Outcome]], now) -> set[int]:
    """Insert the links of successful deliveries in one statement; returns the sync ids whose link is now written.

    Anything that conflicts (a link that already exists, a remote id linked elsewhere) is left to link_set."""
    fresh = [(row, o) for row, o in results if o.verdict == Verdict.OK and o.remote_id and not o.skip]
    if not fresh:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_LINKS_SQL,
            [
                integration_id,
                now,
                now,
                [row.content_type_id for row, _ in fresh],
                [row.object_id for row, _ in fresh],
                [o.remote_id for _, o in fresh],
                [json.dumps(o.link_state or {}) for _, o in fresh],
            ],
        )
        inserted = set(cursor.fetchall())
    return {row.pk for row, _ in fresh if (row.content_type_id, row.object_id) in inserted}


def _attempt(sync: IntegrationSync, outcome: Outcome, started_at) -> SyncAttempt:
    http = outcome.http
    return SyncAttempt(
        sync_id=sync.pk,
        number=sync.attempts,
        started_at=started_at,
        duration_ms=http.duration_ms if http else 0,
        request_summary=outcome.request_summary[:500],
        http_status=http.status if http else None,
        response_excerpt=http.excerpt if http else "",
        error_class=(http.error_class if http else "") or ("" if outcome.verdict == Verdict.OK else outcome.verdict),
        error_message=outcome.error[:2000],
        outcome=AttemptOutcome.OK if outcome.skip else AttemptOutcome(outcome.verdict.value),
        worker=WORKER_NAME,
        claim_token=sync.claim_token,
    )


def _apply_outcome(row, claimed: Claimed, outcome: Outcome, now, *, linked: bool = False) -> None:
    verdict = outcome.verdict
    if outcome.skip:
        row.status, row.last_error = SyncStatus.SKIPPED, outcome.error
        return
    if verdict == Verdict.OK:
        row.status, row.synced_at, row.last_error = SyncStatus.SYNCED, now, ""
        row.remote_id = outcome.remote_id or row.remote_id
        if outcome.remote_id and not linked and not _link_written(row, outcome):
            return
        if claimed.followers:
            IntegrationSync.objects.filter(
                pk__in=claimed.followers, status__in=[SyncStatus.PENDING, SyncStatus.RETRYING]
            ).update(status=SyncStatus.SUPERSEDED, superseded_by=row, updated_at=now)
        return
    row.last_error = outcome.error[:2000]
    if verdict == Verdict.DEFERRED:
        row.attempts = max(row.attempts - 1, 0)  # not the target's fault: does not burn an attempt
        row.status = SyncStatus.RETRYING if row.attempts else SyncStatus.PENDING
        row.next_attempt_at = now + timedelta(seconds=1.0 if outcome.retry_after is None else outcome.retry_after)
        return
    if verdict == Verdict.TERMINAL:
        row.status = SyncStatus.FAILED
    elif policy.is_exhausted(row.attempts, settings.SYNC_MAX_ATTEMPTS):
        row.status = SyncStatus.DEAD
    else:
        row.status = SyncStatus.RETRYING
        delay = policy.backoff_seconds(row.attempts, retry_after=outcome.retry_after)
        row.next_attempt_at = now + timedelta(seconds=delay)
    log.info(
        "[WORKER] sync=%s %s attempt=%s → %s: %s",
        row.pk,
        row.event_type,
        row.attempts,
        row.status,
        row.last_error[:200],
    )


def _link_written(row, outcome: Outcome) -> bool:
    """Write the link; a remote id already linked to another object is a terminal conflict, never a crash loop."""
    try:
        with transaction.atomic():
            link_set(row=row, remote_id=outcome.remote_id, state=outcome.link_state)
        return True
    except IntegrityError:
        row.status = SyncStatus.FAILED
        row.last_error = f"remote id {outcome.remote_id} is already linked to another object (see bitrix_duplicates)"
        log.error("[WORKER] sync=%s %s", row.pk, row.last_error)
        return False


def link_get(*, integration_id: int, content_type_id: int, object_id: str) -> ExternalLink | None:
    return ExternalLink.objects.filter(
        integration_id=integration_id, content_type_id=content_type_id, object_id=object_id
    ).first()


def link_set(*, row: IntegrationSync, remote_id: str, state: dict | None = None) -> ExternalLink:
    """Create or refresh the object → remote id link (a remote id linked elsewhere raises IntegrityError)."""
    link, created = ExternalLink.objects.get_or_create(
        integration_id=row.integration_id,
        content_type_id=row.content_type_id,
        object_id=row.object_id,
        defaults={"remote_id": remote_id, "remote_state": state or {}},
    )
    if not created and (state is not None and link.remote_state != state):
        link.remote_state = state
        link.save(update_fields=["remote_state", "updated_at"])
    if link.remote_id != remote_id:
        log.error(
            "[WORKER] object %s already linked to %s, remote returned %s", row.object_id, link.remote_id, remote_id
        )
    return link


def sync_release_unclaimable(*, claimed: list[Claimed], reason: str) -> None:
    """Used when a target cannot run at all (integration disabled mid-flight): the rows end skipped with the reason."""
    outcome = Outcome(verdict=Verdict.TERMINAL, skip=True, error=reason)
    sync_complete_many(results=[(item, outcome) for item in claimed], started_at=timezone.now())


# Who may retry/replay (API, dashboard, admin): the change permission on integration syncs, not just the view one.
RETRY_PERMISSION = "integrations.change_integrationsync"


class RetryRefused(Exception):
    """An operator's retry that would be wrong (stale state, already delivered or being delivered); str() says why."""


def sync_retry(*, sync_id: int) -> IntegrationSync:
    """The one way operators deliver a row again (API, dashboard, admin actions, `sync_retry`): same event id (receivers
    dedupe on it), due now. Refused with the reason (RetryRefused) when selectors.stale_state_retry_reason objects,
    checked on the locked row so a delivery finishing meanwhile cannot slip past it."""
    from integrations.selectors import stale_state_retry_reason

    with transaction.atomic():
        row = IntegrationSync.objects.select_for_update(of=("self",)).select_related("integration").get(pk=sync_id)
        reason = stale_state_retry_reason(row)
        if reason:
            raise RetryRefused(reason)
        _make_due(row)
    return row


def sync_replay(*, sync: IntegrationSync) -> IntegrationSync:
    """Make a finished row due again, same event id, without the operator checks (reconcile revives a dead create
    whose object has no link and no open row; operators go through sync_retry)."""
    with transaction.atomic():
        row = IntegrationSync.objects.select_for_update().get(pk=sync.pk)
        if row.status in OPEN_STATUSES and row.status != SyncStatus.RETRYING:
            return row
        _make_due(row)
    return row


def _make_due(row: IntegrationSync) -> None:
    row.status, row.next_attempt_at, row.last_error = SyncStatus.PENDING, timezone.now(), ""
    row.attempts = 0
    row.save()
    from integrations.outbox import wake

    transaction.on_commit(lambda: wake([row.integration_id]))


__all__ = [
    "IntegrityError",
    "sync_claim_due",
    "sync_complete",
    "sync_complete_many",
    "sync_lease_extend",
    "sync_replay",
    "sync_retry",
    "RetryRefused",
    "link_get",
    "link_set",
]
