"""The only writer of InboundWebhook: store (accepted, duplicate, rejected), claim, finish, requeue."""

import logging
import threading
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from integrations.background import BackgroundSender
from integrations.models import InboundStatus, InboundWebhook

log = logging.getLogger("integrations.inbound")

STORED_BODY_BYTES = 64 * 1024
REJECTED_BODY_BYTES = 4 * 1024
REJECTED_PER_MINUTE = 100
# Retryable failures wait STALE_SECONDS doubling per attempt, capped at an hour: 12 tries span about 7 hours,
# so a stage change made in Bitrix24 survives a portal outage of that length instead of being given up in minutes.
MAX_ATTEMPTS = 12
STALE_SECONDS = 60
MAX_RETRY_DELAY_SECONDS = 3600
REQUEUE_BATCH = 500
CLAIM_MARGIN_SECONDS = 120
# A worker takes up to READ_BATCH waiting calls at once and reads their deals in one batch call (one request against
# the portal's limit): our own deal updates echo back as ONCRMDEALUPDATE, and one read each would eat the budget.
READ_BATCH = 50

# Processing is paced by the portal's rate limit (one batch read per 50 calls), so waiting 100 ms to send the calls
# of a burst together costs nothing a caller could notice, and saves a broker message per call.
_sender = BackgroundSender("inbound-enqueue", lambda ids: inbound_enqueue_per_read_batch(ids), linger=0.1)
_dropped_lock = threading.Lock()
_dropped = {"minute": None, "count": 0}


def capped(text: str, limit: int) -> tuple[str, bool]:
    """Cut text to at most `limit` UTF-8 bytes; True when something was cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, False
    return data[:limit].decode("utf-8", "ignore"), True


def inbound_store_accepted(*, record: dict[str, Any], body: str, dedupe_key: str) -> InboundWebhook:
    """Insert relying on the unique dedupe key: the loser of a race (or a replay) is stored as a duplicate row."""
    text, truncated = capped(body, STORED_BODY_BYTES)
    fields = {**record, "body": text, "body_truncated": truncated or record.get("body_truncated", False)}
    try:
        with transaction.atomic():  # one transaction, no savepoint: BEGIN, INSERT, COMMIT
            row = InboundWebhook.objects.create(
                **fields, authenticated=True, dedupe_key=dedupe_key, status=InboundStatus.RECEIVED
            )
            transaction.on_commit(lambda: inbound_notify([row.pk]))
    except IntegrityError:
        return _store_repeat(fields, dedupe_key)
    log.info("[INBOUND] row=%s accepted %s %s", row.pk, row.event or "call", row.remote_object or "-")
    return row


_UNTOUCHED_ORIGINAL_SQL = """
SELECT id FROM integrations_inboundwebhook WHERE dedupe_key = %s AND status = 'received' FOR SHARE SKIP LOCKED
"""


def _store_repeat(fields: dict[str, Any], dedupe_key: str) -> InboundWebhook:
    """A second call with the same dedupe key. Processing pulls the deal's current state, so the repeat folds into
    the original only while nobody has processed or started processing it (same second, another change: the
    original's pull will see both). Otherwise it is processed on its own, or that later change would be lost."""
    with transaction.atomic():
        with connection.cursor() as cursor:  # a claimed row is `processing`; one being claimed is locked: skipped
            cursor.execute(_UNTOUCHED_ORIGINAL_SQL, [dedupe_key])
            untouched = cursor.fetchone()
        original = InboundWebhook.objects.filter(dedupe_key=dedupe_key).values_list("pk", flat=True).first()
        if untouched is not None:
            row = InboundWebhook.objects.create(
                **fields,
                authenticated=True,
                dedupe_key=None,
                status=InboundStatus.DUPLICATE,
                result={"duplicate_of": original},
                processed_at=timezone.now(),
            )
            log.info("[INBOUND] row=%s duplicate of row=%s (%s)", row.pk, original, dedupe_key)
            return row
        row = InboundWebhook.objects.create(
            **fields, authenticated=True, dedupe_key=None, status=InboundStatus.RECEIVED, result={"repeat_of": original}
        )
        transaction.on_commit(lambda: inbound_notify([row.pk]))
    log.info("[INBOUND] row=%s repeat of already processed row=%s: pulled again (%s)", row.pk, original, dedupe_key)
    return row


def inbound_store_rejected(*, record: dict[str, Any], body: str, error: str) -> InboundWebhook | None:
    """Store a rejected call with at most 4 KB of body; past REJECTED_PER_MINUTE a minute only a counter is kept."""
    since = timezone.now() - timedelta(seconds=60)
    recent = InboundWebhook.objects.filter(status=InboundStatus.REJECTED, received_at__gte=since)
    if recent[:REJECTED_PER_MINUTE].count() >= REJECTED_PER_MINUTE:
        _note_dropped(error)
        return None
    text, truncated = capped(body, REJECTED_BODY_BYTES)
    row = InboundWebhook.objects.create(
        **{**record, "body": text, "body_truncated": truncated or record.get("body_truncated", False)},
        authenticated=False,
        status=InboundStatus.REJECTED,
        error=error,
        processed_at=timezone.now(),
    )
    log.warning("[INBOUND] row=%s rejected: %s", row.pk, error)
    return row


def _note_dropped(error: str) -> int:
    minute = timezone.now().replace(second=0, microsecond=0)
    with _dropped_lock:
        if _dropped["minute"] != minute:
            _dropped["minute"], _dropped["count"] = minute, 0
        _dropped["count"] += 1
        count = _dropped["count"]
    if count == 1 or count % 100 == 0:
        log.warning(
            "[INBOUND] row=- rejected calls over %s/min: %s not stored this minute (last: %s)",
            REJECTED_PER_MINUTE,
            count,
            error,
        )
    return count


def dropped_this_minute() -> int:
    with _dropped_lock:
        return _dropped["count"] if _dropped["minute"] == timezone.now().replace(second=0, microsecond=0) else 0


def inbound_notify(ids: list[int]) -> None:
    """After commit: ask a worker to process these rows. In the background by default, so the answer to the portal
    never waits on the broker; the ids collected meanwhile leave as one message per READ_BATCH rows."""
    if settings.INBOUND_ENQUEUE_IN_BACKGROUND:
        _sender.submit(ids)
    else:
        inbound_enqueue(ids)


def inbound_enqueue_per_read_batch(ids: list[int]) -> None:
    """One message per READ_BATCH rows: each message takes that many waiting rows, whichever row it names."""
    inbound_enqueue(ids[::READ_BATCH])


def inbound_enqueue(ids: list[int]) -> None:
    """Send the Celery message; a broker outage leaves the row `received` for inbound_requeue_stale()."""
    from integrations.tasks import process_inbound

    for inbound_id in ids:
        try:
            process_inbound.apply_async(args=[inbound_id], retry=False)
        except Exception as exc:  # noqa: BLE001 - any broker failure must not break the committed row
            log.warning("[INBOUND] row=%s not enqueued (%s); the requeue sweep will", inbound_id, type(exc).__name__)
            return


def inbound_claim(*, inbound_id: int, limit: int) -> tuple[InboundWebhook | None, list[InboundWebhook]]:
    """Take the named row if it is `received`, and more waiting rows (oldest first) up to `limit` in all, skipping rows
    others hold. One short transaction marks them `processing` (claim time in processed_at) and commits: no row lock
    is held while the portal is read. Returns (the named row or None, every row taken, the named one first)."""
    with transaction.atomic():
        named = (
            InboundWebhook.objects.select_for_update(skip_locked=True)
            .filter(pk=inbound_id, status=InboundStatus.RECEIVED)
            .first()
        )
        waiting = list(
            InboundWebhook.objects.select_for_update(skip_locked=True)
            .filter(status=InboundStatus.RECEIVED)
            .exclude(pk=inbound_id)
            .order_by("id")[: limit - 1 if named else limit]
        )
        rows = [named, *waiting] if named else waiting
        now = timezone.now()
        InboundWebhook.objects.filter(pk__in=[r.pk for r in rows]).update(
            status=InboundStatus.PROCESSING, processed_at=now
        )
    for row in rows:
        row.status, row.processed_at = InboundStatus.PROCESSING, now
    return named, rows


def inbound_lock_claimed(*, rows: list[InboundWebhook]) -> set[int]:
    """Inside the caller's transaction: lock the rows this claim still holds (ids ascending); a row whose claim ran out
    and was taken over (inbound_requeue_stale) is not ours any more and is left out."""
    mine = Q(pk__in=[])
    for row in rows:
        mine |= Q(pk=row.pk, processed_at=row.processed_at)
    return set(
        InboundWebhook.objects.select_for_update()
        .filter(mine, status=InboundStatus.PROCESSING)
        .order_by("id")
        .values_list("pk", flat=True)
    )


def claim_lease_seconds() -> float:
    """How long a claim may take: the rate-limit wait, then one read with its timeouts, then a generous margin."""
    from integrations.targets.bitrix_limits import WAIT_LIMIT_SECONDS

    connect, read = settings.BITRIX_TIMEOUT
    return WAIT_LIMIT_SECONDS + connect + read + CLAIM_MARGIN_SECONDS


def _release_expired_claims(now) -> list[int]:
    """Rows left `processing` by a worker that died: failed and retryable, one attempt used (a call that kills its
    worker must still reach the attempt cap)."""
    expired = list(
        InboundWebhook.objects.select_for_update(skip_locked=True).filter(
            status=InboundStatus.PROCESSING, processed_at__lt=now - timedelta(seconds=claim_lease_seconds())
        )[:REQUEUE_BATCH]
    )
    for row in expired:
        attempts = int(row.result.get("attempts", 0) or 0) if isinstance(row.result, dict) else 0
        result = {**(row.result if isinstance(row.result, dict) else {}), "attempts": attempts + 1, "retryable": True}
        inbound_finish(row=row, status=InboundStatus.FAILED, result=result, error="worker stopped while processing")
        log.warning("[INBOUND] row=%s claim expired: the worker stopped while processing; retried later", row.pk)
    return [row.pk for row in expired]


def inbound_record_pulled(*, event: str, remote_object: str, body: str, status: str, result: dict, error: str = ""):
    """A change read from the portal rather than posted by it (catch-up), stored already decided, with the calls."""
    return InboundWebhook.objects.create(
        method="GET",
        path="crm.deal.list",
        authenticated=True,
        event=event,
        remote_object=remote_object,
        body=capped(body, 500)[0],
        status=status,
        error=error,
        result=result,
        processed_at=timezone.now(),
    )


def inbound_finish(*, row: InboundWebhook, status: str, result: dict, error: str = "") -> InboundWebhook:
    row.status, row.result, row.error, row.processed_at = status, result, error, timezone.now()
    row.save(update_fields=["status", "result", "error", "processed_at"])
    return row


def _retry_due(now, older_than_seconds: int, max_attempts: int) -> Q:
    """Retryable `failed` rows under the attempt cap whose backoff (older_than_seconds doubling per attempt, capped at
    an hour) has passed."""
    due = Q(pk__in=[])
    for attempts in range(max_attempts):  # 0: only rate-limited so far
        wait = min(older_than_seconds * 2 ** max(attempts - 1, 0), MAX_RETRY_DELAY_SECONDS)
        due |= Q(result__attempts=attempts, processed_at__lt=now - timedelta(seconds=wait))
    return due & Q(status=InboundStatus.FAILED, result__retryable=True)


def inbound_retry_due(
    *, now=None, older_than_seconds: int = STALE_SECONDS, max_attempts: int = MAX_ATTEMPTS, limit: int = REQUEUE_BATCH
) -> list[int]:
    """Make the retryable failed rows whose backoff has passed `received` again (and release expired claims); their
    ids. Sends nothing: the caller does (the requeue sweep) or processes them itself (process_syncs)."""
    now = now or timezone.now()
    with transaction.atomic():
        _release_expired_claims(now)
        retry = list(
            InboundWebhook.objects.select_for_update(skip_locked=True)
            .filter(_retry_due(now, older_than_seconds, max_attempts))
            .order_by("id")
            .values_list("pk", flat=True)[:limit]
        )
        if retry:
            InboundWebhook.objects.filter(pk__in=retry).update(status=InboundStatus.RECEIVED)
    return retry


def inbound_requeue_stale(
    *, older_than_seconds: int = STALE_SECONDS, max_attempts: int = MAX_ATTEMPTS, limit: int = REQUEUE_BATCH
) -> list[int]:
    """Re-enqueue `received` rows older than a minute (and not sent in the last minute), and retryable `failed` rows
    under the attempt cap once their backoff (older_than_seconds doubling per attempt, capped at an hour) has passed."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_seconds)
    with transaction.atomic():
        retry = inbound_retry_due(
            now=now, older_than_seconds=older_than_seconds, max_attempts=max_attempts, limit=limit
        )
        # Received rows whose message may be lost: waiting longer than the cutoff since they were stored or last sent.
        stale = InboundWebhook.objects.filter(status=InboundStatus.RECEIVED, received_at__lt=cutoff).filter(
            Q(queued_at__isnull=True) | Q(queued_at__lt=cutoff)
        )
        ids = sorted({*retry, *stale.order_by("id").values_list("pk", flat=True)[:limit]})
        InboundWebhook.objects.filter(pk__in=ids).update(queued_at=now)
        transaction.on_commit(lambda: inbound_enqueue_per_read_batch(ids))
    for inbound_id in ids:
        log.info("[INBOUND] row=%s requeued%s", inbound_id, " (retry)" if inbound_id in retry else "")
    return ids


def inbound_work_counts() -> dict[str, int]:
    """Inbound work not done yet: calls waiting, being processed, and failed ones that will be retried."""
    from django.db.models import Count

    return InboundWebhook.objects.filter(
        status__in=[InboundStatus.RECEIVED, InboundStatus.PROCESSING, InboundStatus.FAILED]
    ).aggregate(
        received=Count("id", filter=Q(status=InboundStatus.RECEIVED)),
        processing=Count("id", filter=Q(status=InboundStatus.PROCESSING)),
        retry_waiting=Count(
            "id",
            filter=Q(status=InboundStatus.FAILED, result__retryable=True, result__attempts__lt=MAX_ATTEMPTS),
        ),
    )
