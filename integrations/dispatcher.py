"""Claim → deliver (outside any transaction) → complete. Used by the Celery tasks and `process_syncs`."""

import logging
import time
from dataclasses import replace

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, Subquery
from django.utils import timezone

from integrations import config, services
from integrations.errors import ConfigurationError
from integrations.lease import RoundLease
from integrations.masking import remember_endpoint, scrub
from integrations.models import DUE_STATUSES, Integration, IntegrationSync, SyncStatus
from integrations.policy import Verdict
from integrations.targets import target_for
from integrations.targets.base import Outcome

log = logging.getLogger("integrations.worker")
DATA_ERRORS = (TypeError, ValueError, KeyError, AttributeError)
DEFAULT_CLAIM_LIMIT = 50


def dispatch_once(integration_id: int, *, limit: int | None = None) -> int:
    """One claim-and-deliver round for one integration; returns how many rows were handled.

    The batch size is the target's (`claim_limit`) unless given."""
    integration = Integration.objects.filter(pk=integration_id).first()
    if integration is None or (integration.paused_until and integration.paused_until > timezone.now()):
        return 0
    if integration.enabled and not config.integration_config_check(integration=integration):
        return 0  # paused with the reason; nothing claimed, so nothing burns an attempt
    target = target_for(integration.kind)
    limit = limit or getattr(target, "claim_limit", DEFAULT_CLAIM_LIMIT)
    before_claim = time.monotonic()
    claimed = services.sync_claim_due(
        integration=integration, limit=limit, coalesce=target.coalesces, takeover_grace=target.worst_call_seconds()
    )
    if not claimed:
        return 0
    lease = RoundLease(
        ids=[c.id for c in claimed],
        token=claimed[0].sync.claim_token,
        seconds=settings.SYNC_LEASE_SECONDS,
        started=before_claim,
    )
    started = timezone.now()
    if not integration.enabled:
        reason = f"integration disabled{': ' + integration.disabled_reason if integration.disabled_reason else ''}"
        services.sync_release_unclaimable(claimed=claimed, reason=reason)
        return len(claimed)
    log.info("[WORKER] integration=%s claimed %s syncs: %s", integration.pk, len(claimed), [c.id for c in claimed][:20])
    misconfigured = ""
    try:
        outcomes = target.deliver(integration, claimed, lease)
    except ConfigurationError as exc:  # an operator's typo: keep what the round obtained, pause with the reason
        log.exception("[WORKER] integration=%s configuration error", integration.pk)
        outcomes, misconfigured = config.outcomes_after_config_error(claimed, exc), str(exc)
    except DATA_ERRORS as exc:  # bad data cannot get better by retrying: end it with the reason
        log.exception("[WORKER] integration=%s target failed on data", integration.pk)
        outcomes = {c.id: Outcome(verdict=Verdict.TERMINAL, error=f"{type(exc).__name__}: {exc}") for c in claimed}
    except Exception as exc:  # noqa: BLE001 - anything else is retried with backoff, then dead
        log.exception("[WORKER] integration=%s target crashed", integration.pk)
        outcomes = {c.id: Outcome(verdict=Verdict.RETRYABLE, error=f"{type(exc).__name__}: {exc}") for c in claimed}
    missing = Outcome(verdict=Verdict.RETRYABLE, error="target returned no outcome")
    secrets = remember_endpoint(integration.endpoint)
    services.sync_complete_many(
        results=[(item, masked_outcome(outcomes.get(item.id) or missing, secrets)) for item in claimed],
        started_at=started,
    )
    if misconfigured:  # after completion, whose bookkeeping lifts pauses when some rows succeeded
        config.integration_pause_for_config(integration=integration, error=misconfigured)
    return len(claimed)


def masked_outcome(outcome: Outcome, secrets: tuple[str, ...]) -> Outcome:
    """What gets stored (SyncAttempt, last_error, disabled_reason) never quotes the endpoint's secret parts."""
    http = outcome.http
    if http is not None and http.secrets != secrets:
        http = replace(http, secrets=tuple({*http.secrets, *secrets}))
    return replace(
        outcome,
        http=http,
        error=scrub(outcome.error, secrets),
        request_summary=scrub(outcome.request_summary, secrets),
        disable_integration=scrub(outcome.disable_integration, secrets),
    )


def integrations_with_due_work() -> list[int]:
    """Ids of integrations with a due row or an expired lease: per integration, its first due row in id order (through
    sync_claim_idx; a plain EXISTS was planned as a table scan through the finished history) or any expired lease."""
    now = timezone.now()
    syncs = IntegrationSync.objects.filter(integration_id=OuterRef("pk"))
    due = syncs.filter(status__in=DUE_STATUSES, next_attempt_at__lte=now, waiting=False)  # waiting: not claimable
    expired = syncs.filter(status=SyncStatus.IN_PROGRESS, lease_expires_at__lt=now).order_by()
    return list(
        Integration.objects.annotate(first_due=Subquery(due.order_by("id").values("id")[:1]))
        .filter(Q(first_due__isnull=False) | Exists(expired))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def drain(*, max_seconds: float = 60.0, integration_id: int | None = None, limit: int | None = None) -> int:
    """Deliver until nothing is due now (or time is up); returns rows handled."""
    deadline = time.monotonic() + max_seconds
    handled = 0
    while time.monotonic() < deadline:
        ids = [integration_id] if integration_id else integrations_with_due_work()
        round_handled = sum(dispatch_once(i, limit=limit) for i in ids)
        handled += round_handled
        if not round_handled:
            break
    return handled


def open_rows_remaining() -> int:
    return IntegrationSync.objects.filter(status__in=[*DUE_STATUSES, SyncStatus.IN_PROGRESS]).count()
