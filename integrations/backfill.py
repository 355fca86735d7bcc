"""Onboarding an existing shop: every customer and order goes to an integration that has never seen them.

Bitrix24: the portal is checked first (one cheap call), deals and contacts it already has for our objects are adopted
(ORIGIN_ID, or the old system's `Order #N` title), and a `created` row is queued through the normal outbox for every
object without one, in chunks (each chunk one transaction: a crash or Ctrl-C loses nothing and repeats nothing, a run
again skips what has a created row or a link). A created row of an adopted object updates the adopted deal. n8n (only
when asked): `created` snapshots marked "backfill": true. Delivery is the workers' (dispatcher), at the portal's limit.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, transaction
from django.db.models import CharField, Count, Exists, Model, OuterRef, Q, QuerySet
from django.db.models.functions import Cast
from django.test.utils import override_settings

from integrations import outbox
from integrations.backfill_scan import BY_ORIGIN, BY_TITLE, PortalScan, scan_portal
from integrations.errors import ConfigurationError
from integrations.models import EventType, ExternalLink, Integration, IntegrationKind, IntegrationSync, SyncStatus
from integrations.reconcile import ReconcileError, client_for, link_adopt
from integrations.targets.bitrix_limits import RateLimitTimeout
from integrations.unlinked import KINDS

log = logging.getLogger("integrations.worker")
CHUNK = 500
TOKEN_TRIES = 6  # × the bucket's 10 s wait
DONE_STATUSES = (SyncStatus.SYNCED, SyncStatus.FAILED, SyncStatus.DEAD, SyncStatus.SUPERSEDED, SyncStatus.SKIPPED)
COUNT_KEYS = ("objects", "already", "adopted_origin", "adopted_title", "queued")


class BackfillError(Exception):
    """The backfill cannot start (nothing was queued); the message is safe to show (no webhook code)."""


@dataclass
class BackfillRun:
    """What one run did, per model name ("user", "order"): counts (COUNT_KEYS) and the adopted objects."""

    integration: Integration
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    adopted: list[dict] = field(default_factory=list)  # kind, object_id, remote_id, by
    conflicts: list[dict] = field(default_factory=list)  # adoption refused: the remote object is linked elsewhere
    duplicates: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    portal_calls: int = 0
    finished: bool = True  # False: stopped at `until` between two chunks; a run again goes on


def backfill_check(*, integration: Integration) -> int:
    """Refuse a disabled integration and a portal that does not answer (401, unknown, rate limit gone): BackfillError.
    Bitrix24 costs one `profile` call through the shared bucket; returns the calls made."""
    if not integration.enabled:
        reason = f" ({integration.disabled_reason})" if integration.disabled_reason else ""
        raise BackfillError(f"integration {integration.name} is disabled{reason}: enable it first, nothing was queued")
    if integration.kind != IntegrationKind.BITRIX24:
        return 0
    try:
        response = _patiently(lambda: client_for(integration, purpose="backfill").call("profile"))
    except (ConfigurationError, RateLimitTimeout) as exc:
        raise BackfillError(f"{integration.name}: {exc}; nothing was queued") from exc
    if response.auth_failed:
        raise BackfillError(
            f"{integration.name}: the portal rejected the credentials ({response.error or 'HTTP 401'}); check the "
            "webhook URL (Bitrix24 → Developer resources → Inbound webhook). Nothing was queued."
        )
    if not response.ok:
        error = response.error or response.http.error_class or f"HTTP {response.http.status}"
        raise BackfillError(f"{integration.name}: profile failed ({error}); nothing was queued")
    return 1


def backfill_start(
    *,
    integration: Integration,
    chunk: int | None = None,
    on_chunk: Callable[[str, int], None] | None = None,
    checked: bool = False,
    until: float | None = None,
) -> BackfillRun:
    """Check (unless the caller just did), adopt (Bitrix24) and queue; resumable. on_chunk(model name, objects
    queued) after each commit; `until` (time.monotonic()) stops between two chunks (run.finished is then False)."""
    run = BackfillRun(integration=integration)
    run.portal_calls = 0 if checked else backfill_check(integration=integration)
    scan = PortalScan()
    if integration.kind == IntegrationKind.BITRIX24:
        try:
            scan = _patiently(lambda: scan_portal(client_for(integration, purpose="backfill")))
        except (ReconcileError, RateLimitTimeout) as exc:
            raise BackfillError(f"{integration.name}: could not read the portal: {exc}; nothing was queued") from exc
        run.portal_calls += scan.calls
        run.duplicates = scan.duplicates
    for model, scope in KINDS:  # customers first: deals need their contacts
        if not run.finished:
            break
        run.counts[model._meta.model_name] = _queue_kind(run, model, scope, scan, chunk or CHUNK, on_chunk, until)
    log.info("[WORKER] backfill integration=%s %s", integration.pk, run.counts)
    return run


def _patiently(read, tries: int = TOKEN_TRIES):
    """A read that lost the race for the shared bucket's tokens to busy workers (RateLimitTimeout) is tried again:
    a run again while the first run's rows are being delivered must not fail for that."""
    for _ in range(tries - 1):
        try:
            return read()
        except RateLimitTimeout:
            continue
    return read()


def not_yet_sent(*, integration: Integration, model: type[Model], scope: Q) -> QuerySet:
    """Objects with neither a created row nor a link for the integration (what a run still has to queue)."""
    same_object = {
        "integration": integration,
        "content_type": ContentType.objects.get_for_model(model),
        "object_id": Cast(OuterRef("pk"), CharField()),
    }
    return model.objects.filter(
        scope,
        ~Exists(ExternalLink.objects.filter(**same_object)),
        ~Exists(IntegrationSync.objects.filter(**same_object, event_type=EventType.CREATED)),
    ).order_by("pk")


def _queue_kind(run: BackfillRun, model, scope: Q, scan: PortalScan, chunk: int, on_chunk, until) -> dict[str, int]:
    integration, name = run.integration, model._meta.model_name
    counts = dict.fromkeys(COUNT_KEYS, 0)
    objects = model.objects.filter(scope).order_by("pk")
    counts["objects"] = objects.count()
    if not integration.wants(f"{name}.created"):
        return counts  # the event filter leaves this kind out: record() would write nothing
    content_type = ContentType.objects.get_for_model(model)
    last_pk = 0
    # Chunks by primary key, and what each chunk already has looked up by its ids (index look-ups): the cost of a
    # chunk does not grow with the rows queued so far, whatever the planner's statistics say.
    while batch := list(objects.filter(pk__gt=last_pk)[:chunk]):
        last_pk = batch[-1].pk
        sent = _already_sent(integration, content_type, [str(obj.pk) for obj in batch])
        counts["already"] += len(sent)
        if len(sent) == len(batch):  # done by an earlier run: cheap, never a reason to stop at `until`
            if on_chunk is not None:
                on_chunk(name, len(batch))
            continue
        # One transaction per chunk: the links adopted and the rows queued for it commit together or not at all.
        with override_settings(SYNC_WAKEUP_ENABLED=False), transaction.atomic():
            for obj in (obj for obj in batch if str(obj.pk) not in sent):
                found = scan.found.get((name, str(obj.pk)))
                if found is not None and _adopt(run, name, obj, found):
                    counts["adopted_origin" if found.by == BY_ORIGIN else "adopted_title"] += 1
                counts["queued"] += bool(
                    outbox.record(obj, EventType.CREATED, integrations=[integration], backfill=True)
                )
        outbox.wake([integration.pk])
        if on_chunk is not None:
            on_chunk(name, len(batch))
        if until is not None and time.monotonic() >= until:
            run.finished = False
            break
    return counts


def _already_sent(integration: Integration, content_type: ContentType, ids: list[str]) -> set[str]:
    """Ids among these that have a link or a created row for the integration (a run skips them)."""
    same = {"integration": integration, "content_type": content_type, "object_id__in": ids}
    linked = ExternalLink.objects.filter(**same).values_list("object_id", flat=True)
    created = IntegrationSync.objects.filter(**same, event_type=EventType.CREATED).values_list("object_id", flat=True)
    return set(linked) | set(created)


def _adopt(run: BackfillRun, name: str, obj, found) -> bool:
    """Link the object to the remote one it already has; a remote object linked to another of ours is left alone
    (the object gets its own, and the conflict is reported)."""
    item = {"kind": name, "object_id": str(obj.pk), "remote_id": found.remote_id, "by": found.by}
    try:
        link_adopt(run.integration, str(obj.pk), found.remote_id, found.stage_id or None, model=name)
    except IntegrityError:
        run.conflicts.append(item)
        return False
    run.adopted.append(item)
    log.info(
        "[WORKER] backfill integration=%s %s=%s adopted %s (%s)",
        run.integration.pk,
        name,
        obj.pk,
        found.remote_id,
        found.by,
    )
    return True


def backfill_progress(*, integrations: list[Integration]) -> dict[str, int]:
    """Backfill rows of these integrations: total, done (synced or ended), synced, failed (failed/dead), open."""
    rows = IntegrationSync.objects.filter(integration__in=integrations, backfill=True)
    counts = rows.aggregate(
        total=Count("id"),
        done=Count("id", filter=Q(status__in=DONE_STATUSES)),
        synced=Count("id", filter=Q(status=SyncStatus.SYNCED)),
        failed=Count("id", filter=Q(status__in=[SyncStatus.FAILED, SyncStatus.DEAD])),
    )
    counts["open"] = counts["total"] - counts["done"]
    return counts


def backfill_delivered(*, integration: Integration) -> dict[str, dict[str, int]]:
    """Per model name: backfill rows synced and failed/dead (for the summary)."""
    rows = IntegrationSync.objects.filter(integration=integration, backfill=True)
    result = {}
    for item in rows.values("content_type__model").annotate(
        synced=Count("id", filter=Q(status=SyncStatus.SYNCED)),
        failed=Count("id", filter=Q(status__in=[SyncStatus.FAILED, SyncStatus.DEAD])),
        total=Count("id"),
    ):
        result[item["content_type__model"]] = {k: item[k] for k in ("synced", "failed", "total")}
    return result


__all__ = ["BY_ORIGIN", "BY_TITLE", "BackfillError", "BackfillRun", "backfill_check", "backfill_start"]
