"""inbound_process: what a stored Bitrix24 call means for our orders (pull the deal, map its stage, ignore echoes)."""

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import transaction

from app.logging import redact
from integrations import payloads
from integrations.clients.bitrix24 import BitrixClient
from integrations.inbound import services
from integrations.models import ExternalLink, InboundStatus, InboundWebhook, Integration, IntegrationKind
from integrations.targets.bitrix_limits import RateLimitTimeout, bitrix_client_for
from orders.models import Order
from orders.services import order_change_status

log = logging.getLogger("integrations.inbound")
_OBJECT = re.compile(r"^([A-Z]+)_(\d+)$")


@dataclass
class Decision:
    status: str
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    retryable: bool = False
    rate_limited: bool = False


def inbound_process(*, inbound_id: int) -> str:
    """Idempotent: only a `received` row is processed, under a SKIP LOCKED row lock; returns the final status."""
    with transaction.atomic():
        row = services.inbound_claim(inbound_id=inbound_id)
        if row is None:
            log.info("[INBOUND] row=%s not processed: not received or locked by another worker", inbound_id)
            return "skipped"
        attempts = int(row.result.get("attempts", 0) or 0) if isinstance(row.result, dict) else 0
        try:
            with transaction.atomic():  # a failing status change leaves no half-written order behind
                decision = _decide(row)
        except Exception as exc:  # noqa: BLE001 - a bug or an outage is recorded on the row, not lost in a log
            log.exception("[INBOUND] row=%s processing raised", row.pk)
            error = redact(f"{type(exc).__name__}: {exc}")[:500]
            decision = Decision(InboundStatus.FAILED, error=error, retryable=True)
        # Waiting for the rate limit is not the portal failing: it does not use up one of the row's attempts.
        attempts += 0 if decision.rate_limited else 1
        result = {**decision.result, "attempts": attempts}
        if isinstance(row.result, dict) and row.result.get("repeat_of"):
            result["repeat_of"] = row.result["repeat_of"]
        if decision.status == InboundStatus.FAILED:
            result["retryable"] = decision.retryable
        services.inbound_finish(row=row, status=decision.status, result=result, error=decision.error)
    log.info(
        "[INBOUND] row=%s %s %s → %s %s",
        row.pk,
        row.event or "call",
        row.remote_object,
        decision.status,
        decision.error or decision.result.get("reason", ""),
    )
    return decision.status


def _decide(row: InboundWebhook) -> Decision:
    found = _OBJECT.match(row.remote_object or "")
    entity, remote_id = (found.group(1), found.group(2)) if found else ("", "")
    if entity == "CONTACT" or row.event.startswith("ONCRMCONTACT"):
        return _ignored("contact changes are not pulled")
    if entity != "DEAL":
        return _ignored("the call names no deal" if not row.remote_object else f"{row.remote_object} is not a deal")
    if row.event == "ONCRMDEALDELETE":
        return _ignored("deal deletions are not pulled", deal_id=remote_id)
    integration = Integration.objects.filter(kind=IntegrationKind.BITRIX24, enabled=True).order_by("id").first()
    link = _link_for(remote_id, integration)
    if link is None:
        return _ignored(f"no order is linked to deal {remote_id}", deal_id=remote_id)
    order = Order.objects.filter(pk=link.object_id).first()
    if order is None:
        return _ignored(f"order {link.object_id} linked to deal {remote_id} no longer exists", deal_id=remote_id)
    client = bitrix_client(integration, request_id=f"inbound:{row.pk}")
    if client is None:
        return Decision(
            InboundStatus.FAILED, error="no Bitrix24 integration or BITRIX_WEBHOOK_URL configured", retryable=True
        )
    try:
        response = client.call("crm.deal.get", {"id": remote_id})
    except RateLimitTimeout as exc:
        return Decision(InboundStatus.FAILED, error=str(exc), retryable=True, rate_limited=True)
    if response.rate_limited:
        error = f"crm.deal.get: {response.error or response.http.status} (rate limited)"
        return Decision(InboundStatus.FAILED, error=error, retryable=True, rate_limited=True)
    if not response.ok:
        if response.not_found:
            return _ignored(f"deal {remote_id} not found in Bitrix24", deal_id=remote_id, order_id=order.pk)
        error = response.error or response.http.error_class or f"HTTP {response.http.status}"
        detail = response.error_description or response.http.error
        return Decision(InboundStatus.FAILED, error=f"crm.deal.get: {error} {detail}".strip()[:500], retryable=True)
    deal = response.result if isinstance(response.result, dict) else {}
    return _apply_stage(order, link, remote_id, str(deal.get("STAGE_ID") or ""))


def _apply_stage(order: Order, link: ExternalLink, remote_id: str, stage: str) -> Decision:
    """Map STAGE_ID → status; unknown stages are recorded, never guessed; our own state echoing back changes nothing."""
    order = Order.objects.select_for_update().get(pk=order.pk)  # compare with the state we are about to change
    base = {"deal_id": remote_id, "order_id": order.pk, "stage": stage}
    status = payloads.status_for_stage(stage, settings.BITRIX_STAGE_MAP)
    if status is None:
        return _ignored(f"unknown stage {stage!r}", **base)
    if status == order.status:
        return _ignored("order already has this status", echo=True, status=status, **base)
    # The stage we last wrote coming back (e.g. an old event arriving after a newer local change) is no new information.
    if stage == (link.remote_state or {}).get("STAGE_ID"):
        return _ignored("stage is the one we last wrote", echo=True, status=order.status, **base)
    old = order.status
    try:
        order_change_status(order=order, status=status, force=True)
    except ValidationError as exc:
        return Decision(InboundStatus.FAILED, result=base, error=f"status {status!r} rejected: {exc.messages}")
    return Decision(InboundStatus.PROCESSED, result={**base, "old": old, "new": status})


def _ignored(reason: str, **details: Any) -> Decision:
    return Decision(InboundStatus.IGNORED, result={"reason": reason, **details})


def _link_for(remote_id: str, integration: Integration | None) -> ExternalLink | None:
    links = ExternalLink.objects.filter(
        integration__kind=IntegrationKind.BITRIX24,
        content_type=ContentType.objects.get_for_model(Order),
        remote_id=remote_id,
    )
    if integration is not None:
        links = links.filter(integration=integration)
    return links.order_by("id").first()


def bitrix_client(integration: Integration | None = None, *, request_id: str = "") -> BitrixClient | None:
    """The enabled bitrix24 Integration's endpoint, else BITRIX_WEBHOOK_URL; behind the shared per-portal bucket."""
    if integration is None:
        integration = Integration.objects.filter(kind=IntegrationKind.BITRIX24, enabled=True).order_by("id").first()
    if integration is None and settings.BITRIX_WEBHOOK_URL:
        integration = Integration(kind=IntegrationKind.BITRIX24, endpoint=settings.BITRIX_WEBHOOK_URL)
    if integration is None or not integration.endpoint:
        return None
    return bitrix_client_for(integration, request_id=request_id)
