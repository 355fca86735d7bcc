"""Catch-up: deal stage changes made in Bitrix24 whose event post never reached us, read back from the portal.

Bitrix24 posts ONCRMDEALUPDATE once and never again; a post lost to our outage or a network fault would leave the order
and the deal disagreeing. Every run lists the deals carrying our ORIGINATOR_ID modified since the stored cursor (minus
an overlap), oldest first, and applies each deal's stage through the inbound path (processing._apply_stage: stage map,
echo rules, order service → order history and n8n event). The cursor moves after a page is applied, never before, so a
crash re-reads (applying again is a no-op: the order already has the status). Pages go only while the shared rate-limit
bucket is at least half full: catch-up uses spare capacity, and deliveries and inbound reads keep the other half.
See docs/bitrix24.md ("Catch-up")."""

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from app.logging import redact
from integrations.clients.bitrix24 import BitrixClient, BitrixResponse
from integrations.errors import ConfigurationError
from integrations.inbound import echoes, services
from integrations.inbound.processing import DealRead, _apply_stage, _link_for
from integrations.inbound.reads import Deal
from integrations.models import CatchupState, InboundStatus, Integration, IntegrationKind
from integrations.targets.bitrix_limits import RateLimitTimeout, bitrix_client_for, bucket_for
from orders.models import Order

log = logging.getLogger("integrations.inbound")
FIRST_LOOKBACK = timedelta(hours=1)  # a portal's first run starts here (`bitrix_catchup --since` reaches further)
SPARE_FRACTION = 0.5  # a page is read only while the shared bucket holds at least this share of its burst
PAGE_TRIES = 3  # a page met by a 5xx or a dropped connection is asked again at once, up to this many times
SELECT = ["ID", "STAGE_ID", "DATE_MODIFY", "ORIGINATOR_ID"]
ORDER = {"DATE_MODIFY": "ASC", "ID": "ASC"}
_LOCK_CLASS = 0x0CA7C0  # pg advisory lock namespace: one run per integration at a time, no row lock held over HTTP
EVENT = "CATCHUP"


@dataclass
class CatchupResult:
    """One run: outcome `complete` (every page read), `more` (page limit; the next run goes on), `no spare capacity`,
    `busy` (another run holds the integration), or `failed: …` (the portal or config; retried next run)."""

    integration_id: int
    outcome: str
    calls: int = 0
    read: int = 0
    applied: int = 0
    cursor: datetime | None = None

    @property
    def complete(self) -> bool:
        return self.outcome == "complete"


def catchup_all(*, max_pages: int | None = None) -> list[dict]:
    """One run per enabled Bitrix24 integration (the beat task)."""
    portals = Integration.objects.filter(kind=IntegrationKind.BITRIX24, enabled=True).exclude(endpoint="")
    return [asdict(catchup_run(integration=each, max_pages=max_pages)) for each in portals.order_by("id")]


def catchup_rewind(*, integration: Integration, since: datetime) -> CatchupState:
    """Set the cursor back (or forward) to `since`: the next run reads every change from there on."""
    state, _ = CatchupState.objects.update_or_create(integration=integration, defaults={"cursor": since})
    return state


def catchup_run(*, integration: Integration, max_pages: int | None = None) -> CatchupResult:
    """Read and apply the deal changes since the cursor, at most max_pages list pages (BITRIX_CATCHUP_MAX_PAGES)."""
    with _exclusive(integration.pk) as mine:
        if not mine:
            return CatchupResult(integration.pk, "busy")
        state, _ = CatchupState.objects.get_or_create(integration=integration)
        try:
            result = _run(integration, state, max_pages or settings.BITRIX_CATCHUP_MAX_PAGES)
        except Exception as exc:  # noqa: BLE001 - e.g. the database went away mid-page: the cursor stays, next run re-reads
            log.exception("[CATCHUP] integration=%s run raised", integration.pk)
            result = CatchupResult(integration.pk, redact(f"failed: {type(exc).__name__}: {exc}"))
        now = timezone.now()
        CatchupState.objects.filter(pk=state.pk).update(
            last_run_at=now,
            last_outcome=result.outcome[:255],
            last_calls=result.calls,
            last_read=result.read,
            last_applied=result.applied,
            calls_total=F("calls_total") + result.calls,
            applied_total=F("applied_total") + result.applied,
            **({"last_complete_at": now} if result.complete else {}),
        )
        log.info(
            "[CATCHUP] integration=%s %s: %s calls, %s deals read, %s applied, cursor %s",
            integration.pk,
            result.outcome,
            result.calls,
            result.read,
            result.applied,
            result.cursor.isoformat() if result.cursor else None,
        )
        return result


def _run(integration: Integration, state: CatchupState, max_pages: int) -> CatchupResult:
    cursor = state.cursor or timezone.now() - FIRST_LOOKBACK
    result = CatchupResult(integration.pk, "more", cursor=cursor)
    try:
        client = bitrix_client_for(integration, request_id=f"catchup:{uuid.uuid4().hex[:12]}")
        bucket = bucket_for(integration)
    except ConfigurationError as exc:
        result.outcome = f"failed: {exc}"
        return result
    # Keyset paging: each page starts at the last DATE_MODIFY read (its rows come again and are skipped as seen), so a
    # deal modified during the run moves behind the window and cannot push an unread deal onto a page already read.
    # Only a full page within one second of DATE_MODIFY pages on by `start`/`next`.
    lower, start, seen = cursor - timedelta(seconds=settings.BITRIX_CATCHUP_OVERLAP_SECONDS), 0, set()
    read_started: datetime | None = None
    for _ in range(max_pages):
        read = _read_page(client, bucket, {"filter": _filter(lower), "order": ORDER, "select": SELECT, "start": start})
        result.calls += read.calls
        page = read.response
        if page is None:
            result.outcome = read.outcome
            return result
        if read_started is None:  # the portal's clock when the first page was read, else ours
            read_started = _portal_time(page.time) or timezone.now()
        rows = [r for r in page.result if isinstance(r, dict) and r.get("ID")]
        fresh = [r for r in rows if (str(r["ID"]), str(r.get("DATE_MODIFY"))) not in seen]
        result.applied += _apply_page(integration, fresh)
        result.read += len(fresh)
        seen.update((str(r["ID"]), str(r.get("DATE_MODIFY"))) for r in fresh)
        last = max((m for m in (echoes.parse_time(r.get("DATE_MODIFY")) for r in rows) if m), default=None)
        if page.next is None:
            # Every deal modified before the read started was on these pages; later ones come within the overlap.
            result.cursor = _advance(state, max(result.cursor, read_started, last or result.cursor))
            result.outcome = "complete"
            return result
        if last is not None:
            result.cursor = _advance(state, max(result.cursor, last))
        if last is not None and last > lower:
            lower, start = last, 0
        else:
            start = page.next
    return result


@dataclass
class _Page:
    response: BitrixResponse | None
    calls: int
    outcome: str = ""


def _read_page(client: BitrixClient, bucket, params: dict) -> _Page:
    """One crm.deal.list page; a 5xx or a dropped connection is asked again at once (a read changes nothing), up to
    PAGE_TRIES times, each only with spare capacity. A rate-limit answer (503/429) or any other error is not."""
    calls = 0
    for attempt in range(1, PAGE_TRIES + 1):
        if not _spare(bucket):
            return _Page(None, calls, "no spare capacity")
        try:
            page = client.call("crm.deal.list", params)
        except RateLimitTimeout:
            return _Page(None, calls, "no spare capacity")
        calls += 1
        if page.ok and isinstance(page.result, list):
            return _Page(page, calls)
        transient = (page.transport_error or page.server_error) and not page.rate_limited
        if not transient or attempt == PAGE_TRIES:
            code = page.error or page.http.error_class or f"HTTP {page.http.status}"
            detail = page.error_description or page.http.error
            return _Page(None, calls, redact(f"failed: crm.deal.list {code} {detail}".strip()))
    raise AssertionError("unreachable")


def _apply_page(integration: Integration, rows: list[dict]) -> int:
    """Apply each deal's stage in its own transaction (the order locked, as inbound processing does); the number of
    orders changed. A database error propagates: the run ends and the cursor stays where it was."""
    applied = 0
    for row in rows:
        if str(row.get("ORIGINATOR_ID") or "") != settings.BITRIX_ORIGINATOR_ID:
            continue  # not ours, whatever the portal's filter let through
        remote_id = str(row["ID"])
        link = _link_for(remote_id, integration)
        order = Order.objects.filter(pk=link.object_id).first() if link is not None else None
        if order is None:
            continue  # a deal of ours without a live order here: reconcile_bitrix and bitrix_duplicates see to it
        deal = Deal(str(row.get("STAGE_ID") or ""), echoes.parse_time(row.get("DATE_MODIFY")))
        with transaction.atomic():
            decision = _apply_stage(DealRead(order=order, link=link, remote_id=remote_id), deal)
            if decision.status == InboundStatus.IGNORED:
                continue  # our echo, already applied, older than a local change, unknown stage: nothing to keep
            _record(remote_id, row, decision)
        applied += decision.status == InboundStatus.PROCESSED
    return applied


def _record(remote_id: str, row: dict, decision) -> None:
    """A change catch-up applied (or could not) is listed with the inbound calls (admin → Inbound webhooks)."""
    services.inbound_record_pulled(
        event=EVENT,
        remote_object=f"DEAL_{remote_id}",
        body=str({k: row.get(k) for k in SELECT}),
        status=decision.status,
        error=decision.error,
        result={**decision.result, "source": "catchup", "retryable": False},
    )


def _advance(state: CatchupState, cursor: datetime) -> datetime:
    """Store the cursor once the rows before it were applied (committed); it never moves back here."""
    CatchupState.objects.filter(pk=state.pk).update(cursor=cursor)
    return cursor


def _spare(bucket) -> bool:
    try:
        return bucket.state()["tokens"] >= bucket.burst * SPARE_FRACTION
    except Exception:  # noqa: BLE001 - Redis down: the client's in-process bucket still limits us
        return True


def _filter(lower: datetime) -> dict:
    return {">=DATE_MODIFY": lower.isoformat(timespec="seconds"), "ORIGINATOR_ID": settings.BITRIX_ORIGINATOR_ID}


def _portal_time(block: dict) -> datetime | None:
    """When the portal began answering (its `time.date_start`), minus the clock slack."""
    started = echoes.parse_time(block.get("date_start")) if isinstance(block, dict) else None
    return started - timedelta(seconds=echoes.CLOCK_SLACK_SECONDS) if started else None


@contextmanager
def _exclusive(integration_id: int) -> Iterator[bool]:
    """A session advisory lock (no transaction, no row lock): True when this process runs the integration's catch-up."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_CLASS, integration_id])
        mine = bool(cursor.fetchone()[0])
    try:
        yield mine
    finally:
        if mine:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_LOCK_CLASS, integration_id])
