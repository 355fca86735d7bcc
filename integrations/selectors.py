"""Reads for operators: per-integration status, one object's history, sync and inbound lists, `order:41` refs."""

from dataclasses import dataclass
from datetime import datetime

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db.models import Model, Prefetch, Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from integrations import tally
from integrations.masking import mask_endpoint
from integrations.models import (
    OPEN_STATUSES,
    CatchupState,
    ExternalLink,
    InboundWebhook,
    Integration,
    IntegrationKind,
    IntegrationSync,
    SyncAttempt,
    SyncStatus,
)

# Object types an operator can name; they are the models the outbox records (see integrations/signals.py).
SYNCED_MODELS = {"order": ("orders", "order"), "user": ("users", "user")}
# Remote entity per object type in Bitrix24 (inbound calls name them DEAL_<id> / CONTACT_<id>).
BITRIX_ENTITY = {"order": "deal", "user": "contact"}


@dataclass(frozen=True)
class ObjectRef:
    object_type: str
    object_id: str
    content_type: ContentType

    def __str__(self) -> str:
        return f"{self.object_type}:{self.object_id}"

    def load(self) -> Model | None:
        return self.content_type.model_class()._default_manager.filter(pk=self.object_id).first()


def object_ref(object_type: str, object_id: str | int) -> ObjectRef:
    """`order`, `41` → ObjectRef; ValidationError names what is wrong."""
    name = str(object_type).strip().lower()
    if name not in SYNCED_MODELS:
        raise ValidationError(f"unknown object type {object_type!r}; use one of: {', '.join(SYNCED_MODELS)}")
    text = str(object_id).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValidationError(f"object id must be a positive integer, got {object_id!r}")
    app_label, model = SYNCED_MODELS[name]
    return ObjectRef(name, str(int(text)), ContentType.objects.get_by_natural_key(app_label, model))


def parse_object_ref(text: str) -> ObjectRef:
    """'order:41' → ObjectRef."""
    object_type, sep, object_id = str(text).partition(":")
    if not sep:
        raise ValidationError(f"object must look like 'order:41', got {text!r}")
    return object_ref(object_type, object_id)


# Status


def sync_counts() -> dict[int, dict[str, int]]:
    """{integration id: {status: rows}} (statuses without rows are absent); never a scan of the history."""
    return tally.counts_and_oldest()[0]


def oldest_open_created_at() -> dict[int, datetime]:
    """{integration id: created_at of its oldest pending/in-progress/retrying row}."""
    return tally.counts_and_oldest()[1]


def integration_status_summary(*, now: datetime | None = None) -> list[dict]:
    """One dict per integration: masked endpoint, counts by status, oldest open row, last success/failure, bucket."""
    now = now or timezone.now()
    counts, oldest = tally.counts_and_oldest()
    catchups = {state.integration_id: state for state in CatchupState.objects.all()}
    summary = []
    for integration in Integration.objects.order_by("id"):
        by_status = {status: counts.get(integration.pk, {}).get(status, 0) for status in SyncStatus.values}
        first_open = oldest.get(integration.pk)
        summary.append(
            {
                "id": integration.pk,
                "name": integration.name,
                "kind": integration.kind,
                "enabled": integration.enabled,
                "disabled_reason": integration.disabled_reason,
                "paused_until": integration.paused_until,
                "endpoint": mask_endpoint(integration.endpoint),
                "counts": by_status,
                "open": sum(by_status[s] for s in OPEN_STATUSES),
                "dead": by_status[SyncStatus.DEAD],
                "failed": by_status[SyncStatus.FAILED],
                "oldest_pending_age_seconds": round((now - first_open).total_seconds(), 1) if first_open else None,
                "consecutive_failures": integration.consecutive_failures,
                "last_success_at": integration.last_success_at,
                "last_failure_at": integration.last_failure_at,
                "rate_limit": bucket_state(integration),
                "catchup": catchup_status(integration, catchups.get(integration.pk), now=now),
            }
        )
    return summary


def catchup_status(integration: Integration, state: CatchupState | None, *, now: datetime) -> dict | None:
    """Bitrix24 catch-up: cursor, lag (how far back a change may still be unapplied), last run, calls; None for n8n."""
    if integration.kind != IntegrationKind.BITRIX24:
        return None
    if state is None:
        return {"cursor": None, "lag_seconds": None, "last_run_at": None, "last_complete_at": None, "last_outcome": ""}
    return {
        "cursor": state.cursor,
        "lag_seconds": round((now - state.cursor).total_seconds(), 1) if state.cursor else None,
        "last_run_at": state.last_run_at,
        "last_complete_at": state.last_complete_at,
        "last_outcome": state.last_outcome,
        "last_calls": state.last_calls,
        "last_read": state.last_read,
        "last_applied": state.last_applied,
        "calls_total": state.calls_total,
        "applied_total": state.applied_total,
    }


def bucket_state(integration: Integration) -> dict | None:
    """The shared Bitrix24 token bucket (tokens left, rate, burst); None for other kinds, error if Redis fails."""
    if integration.kind != IntegrationKind.BITRIX24:
        return None
    from integrations.targets.bitrix_limits import bucket_for

    try:
        return {key: round(value, 2) for key, value in bucket_for(integration).state().items()}
    except Exception as exc:  # noqa: BLE001 - a status page must render while Redis is down
        return {"error": type(exc).__name__}


def broker_status(timeout: float = 1.0) -> dict:
    """Reachable, and the length of Celery's default queue (`LLEN celery`) when the broker is Redis."""
    import redis
    from django.conf import settings

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout)
        client.ping()
        return {"reachable": True, "queue_length": int(client.llen("celery"))}
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return {"reachable": False, "queue_length": None}


def work_status() -> dict:
    """Is there any work left? Open syncs (pending, in progress, retrying) and inbound calls (waiting, being
    processed, failed and to be retried: a stage change made in Bitrix24 may be among them)."""
    from integrations.inbound.services import inbound_work_counts

    open_syncs = IntegrationSync.objects.filter(status__in=OPEN_STATUSES).count()
    inbound = inbound_work_counts()
    return {"idle": open_syncs == 0 and not any(inbound.values()), "open_syncs": open_syncs, "inbound": inbound}


def describe_work(work: dict) -> str:
    """One line for the commands: `idle`, or what is left."""
    if work["idle"]:
        return "idle"
    inbound = work["inbound"]
    calls = sum(inbound.values())
    return (
        f"NOT idle: {work['open_syncs']} open syncs, {calls} inbound calls ({inbound['received']} waiting, "
        f"{inbound['processing']} being processed, {inbound['retry_waiting']} failed and to be retried)"
    )


def operations_status(*, now: datetime | None = None) -> dict:
    """Everything the status API and `sync_status` show, in one document."""
    from integrations.heartbeats import beat_liveness, worker_liveness

    now = now or timezone.now()
    workers = worker_liveness(now=now)
    beat = beat_liveness(now=now)
    if not any(w["alive"] for w in workers):
        beat["note"] = "no live worker: beat heartbeats are written by the workers that run its tasks"
    integrations = integration_status_summary(now=now)
    return {
        "generated_at": now,
        "integrations": integrations,
        "workers": workers,
        "beat": beat,
        "broker": broker_status(),
        "work": work_status(),
        # What the database says (the Integration rows), not this process's environment: BITRIX_ENABLED/N8N_ENABLED
        # are read only by sync_bootstrap, and a second shell may not have them.
        "settings": {
            "bitrix_enabled": any(i["enabled"] for i in integrations if i["kind"] == IntegrationKind.BITRIX24),
            "n8n_enabled": any(i["enabled"] for i in integrations if i["kind"] == IntegrationKind.N8N),
        },
    }


# History


def sync_list(
    *,
    ref: ObjectRef | None = None,
    integration_id: int | None = None,
    status: str | None = None,
    event: str | None = None,
    since: datetime | None = None,
) -> QuerySet[IntegrationSync]:
    """Newest first, attempts prefetched in order. `event` is an event type (`updated`) or name (`order.updated`)."""
    rows = IntegrationSync.objects.select_related("content_type", "integration").prefetch_related(
        Prefetch("attempt_rows", queryset=SyncAttempt.objects.order_by("id"))
    )
    if ref is not None:
        rows = rows.filter(content_type=ref.content_type, object_id=ref.object_id)
    if integration_id is not None:
        rows = rows.filter(integration_id=integration_id)
    if status:
        rows = rows.filter(status=status)
    if event:
        object_type, _, event_type = event.rpartition(".")
        rows = rows.filter(event_type=event_type)
        if object_type:
            rows = rows.filter(content_type__model=object_type)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    return rows.order_by("-id")


def inbound_list(
    *, status: str | None = None, event: str | None = None, since: datetime | None = None
) -> QuerySet[InboundWebhook]:
    rows = InboundWebhook.objects.all()
    if status:
        rows = rows.filter(status=status)
    if event:
        rows = rows.filter(event__iexact=event)
    if since is not None:
        rows = rows.filter(received_at__gte=since)
    return rows.order_by("-id")


def object_links(ref: ObjectRef) -> list[ExternalLink]:
    return list(
        ExternalLink.objects.filter(content_type=ref.content_type, object_id=ref.object_id)
        .select_related("integration")
        .order_by("integration_id")
    )


def inbound_mentioning(remote_objects: list[str], *, limit: int = 50) -> list[InboundWebhook]:
    """Inbound calls about any of `remote_objects` (e.g. DEAL_123): their subject, or mentioned in body or query."""
    if not remote_objects:
        return []
    condition = Q()
    for tag in remote_objects:
        condition |= Q(remote_object__iexact=tag) | Q(body__icontains=tag) | Q(query_text__icontains=tag)
    rows = InboundWebhook.objects.annotate(query_text=Cast("query", TextField())).filter(condition)
    return list(rows.order_by("-id")[:limit])[::-1]


def stale_state_retry_reason(sync: IntegrationSync) -> str | None:
    """Why replaying this row would be wrong, or None. State-sync targets (Bitrix24) send the row's own snapshot:
    replaying an old row after a newer one of the same object was delivered would put old data back."""
    if sync.status == SyncStatus.SKIPPED:  # an event an integration missed while disabled: event streams only
        if not sync.integration.enabled:
            return "the integration is disabled: enable it first"
        if sync.integration.kind == IntegrationKind.BITRIX24:
            return "skipped rows of a state sync are not replayed: enabling it again sent the latest state (or resync)"
        return None
    if sync.status in (SyncStatus.SYNCED, SyncStatus.SUPERSEDED):
        return f"row is {sync.status}; use `resync` to send the object's current state"
    if sync.status not in (SyncStatus.FAILED, SyncStatus.DEAD, SyncStatus.RETRYING):
        return f"row is {sync.status}: it is already being delivered"
    if sync.integration.kind == IntegrationKind.BITRIX24:
        newer = IntegrationSync.objects.filter(
            integration_id=sync.integration_id,
            content_type_id=sync.content_type_id,
            object_id=sync.object_id,
            sequence__gt=sync.sequence,
            status=SyncStatus.SYNCED,
        ).exists()
        if newer:
            return "a newer row of this object was delivered since; use `resync` to send the current state"
    return None
