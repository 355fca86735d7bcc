"""inbound_process: what a stored Bitrix24 call means for our orders (pull the deal, map its stage, ignore echoes)."""

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import transaction

from app.logging import redact
from integrations import payloads
from integrations.inbound import echoes, services
from integrations.inbound.reads import Deal, Decision, read_deals
from integrations.models import ExternalLink, InboundStatus, InboundWebhook, Integration, IntegrationKind
from orders.models import Order
from orders.services import order_change_status

log = logging.getLogger("integrations.inbound")
_OBJECT = re.compile(r"^([A-Z]+)_(\d+)$")


BATCH = services.READ_BATCH


@dataclass
class DealRead:
    """A call that names a linked deal: its outcome depends on the deal's current stage, read from the portal."""

    order: Order
    link: ExternalLink
    remote_id: str


def inbound_process(*, inbound_id: int) -> str:
    """Idempotent: only `received` rows are processed, each once; returns the named row's status (see _process)."""
    return _process(inbound_id)[0]


def inbound_drain(*, max_seconds: float = 60.0) -> int:
    """Process the waiting inbound calls now, in this process (process_syncs), retries whose backoff has passed
    included; returns how many calls were handled."""
    deadline, handled = time.monotonic() + max_seconds, 0
    while time.monotonic() < deadline:
        services.inbound_retry_due()
        first = InboundWebhook.objects.filter(status=InboundStatus.RECEIVED).order_by("id").values_list("pk", flat=True)
        if not first:
            break
        handled += _process(first[0])[1]
    return handled


def _process(inbound_id: int) -> tuple[str, int]:
    """Idempotent: only `received` rows are processed, each once; returns the named row's status.

    The named row is taken with up to BATCH - 1 other waiting rows (oldest first), and the deals they name are read in
    one batch call. Three steps, so that no transaction is open and no row lock is held while the portal is read (a
    rate-limit wait of up to 10 s, then a read of up to 65 s): claim (rows marked `processing`, committed), read,
    then apply in one transaction that locks the orders in ascending id (two batches sharing orders cannot deadlock).
    Every row gets its own decision, attempt count and savepoint. When the named row is done already (or another
    worker has it), the message still takes up to BATCH waiting rows: in a long queue, every message moves the
    backlog on instead of only finding its row done."""
    row, rows = services.inbound_claim(inbound_id=inbound_id, limit=BATCH)
    if not rows:
        log.info("[INBOUND] row=%s not processed: not received or taken by another worker", inbound_id)
        return "skipped", 0
    lead = rows[0]
    decisions = _decide_all(rows, request_id=f"inbound:{lead.pk}")
    for each in rows:
        decision = decisions.get(each.pk)
        if decision is None:
            log.warning("[INBOUND] row=%s claim ran out and was taken over: left to the new claim", each.pk)
            continue
        log.info(
            "[INBOUND] row=%s %s %s → %s %s",
            each.pk,
            each.event or "call",
            each.remote_object,
            decision.status,
            decision.error or decision.result.get("reason", ""),
        )
    if row is None:
        log.info("[INBOUND] row=%s done or taken elsewhere; took %s waiting calls instead", inbound_id, len(rows))
        return "skipped", len(decisions)
    return (decisions[row.pk].status if row.pk in decisions else "skipped"), len(decisions)


def _finish(row: InboundWebhook, decision: Decision, *, read_with: int) -> None:
    attempts = int(row.result.get("attempts", 0) or 0) if isinstance(row.result, dict) else 0
    # Waiting for the rate limit is not the portal failing: it does not use up one of the row's attempts.
    attempts += 0 if decision.rate_limited else 1
    result = {**decision.result, "attempts": attempts}
    if isinstance(row.result, dict) and row.result.get("repeat_of"):
        result["repeat_of"] = row.result["repeat_of"]
    if read_with != row.pk:
        result["processed_with"] = read_with  # the deal read carried X-Request-Id inbound:<that row>
    if decision.status == InboundStatus.FAILED:
        result["retryable"] = decision.retryable
    services.inbound_finish(row=row, status=decision.status, result=result, error=decision.error)


def _guarded(row: InboundWebhook, decide) -> Decision | DealRead:
    """Run one row's step in its own savepoint: a failing status change leaves no half-written order behind, and a bug
    or an outage is recorded on that row (retryable), not lost in a log or spread to the other rows."""
    try:
        with transaction.atomic():
            return decide()
    except Exception as exc:  # noqa: BLE001
        log.exception("[INBOUND] row=%s processing raised", row.pk)
        return Decision(InboundStatus.FAILED, error=redact(f"{type(exc).__name__}: {exc}")[:500], retryable=True)


def _decide_all(rows: list[InboundWebhook], *, request_id: str) -> dict[int, Decision]:
    """Decide and finish the claimed rows; {row id: decision} for the rows still ours at the end."""
    integration = Integration.objects.filter(kind=IntegrationKind.BITRIX24, enabled=True).order_by("id").first()
    steps = {row.pk: _guarded(row, lambda row=row: _without_portal(row, integration)) for row in rows}
    reads = {pk: step for pk, step in steps.items() if isinstance(step, DealRead)}
    stages: dict[str, Deal | None | Decision] = {}
    deal_ids = sorted({r.remote_id for r in reads.values()})
    try:  # outside any transaction: the claim is committed, nothing is locked
        stages = read_deals(integration, deal_ids, request_id=request_id) if reads else {}
    except Exception as exc:  # noqa: BLE001 - the claimed rows must end failed (retryable), not stay `processing`
        log.exception("[INBOUND] row=%s deal read raised", rows[0].pk)
        failed = Decision(InboundStatus.FAILED, error=redact(f"{type(exc).__name__}: {exc}")[:500], retryable=True)
        stages = dict.fromkeys(deal_ids, failed)
    decisions: dict[int, Decision] = {}
    with transaction.atomic():
        mine = services.inbound_lock_claimed(rows=rows)
        orders = sorted({read.order.pk for pk, read in reads.items() if pk in mine})
        list(Order.objects.select_for_update().filter(pk__in=orders).order_by("pk").values_list("pk", flat=True))
        for row in rows:
            if row.pk not in mine:
                continue
            step = steps[row.pk]
            decisions[row.pk] = step if isinstance(step, Decision) else _decide_read(row, step, stages[step.remote_id])
            _finish(row, decisions[row.pk], read_with=rows[0].pk)
    return decisions


def _decide_read(row: InboundWebhook, read: DealRead, deal: Deal | None | Decision) -> Decision:
    if isinstance(deal, Decision):
        return deal
    if deal is None:
        return _ignored(f"deal {read.remote_id} not found in Bitrix24", deal_id=read.remote_id, order_id=read.order.pk)
    return _guarded(row, lambda: _apply_stage(read, deal))


def _without_portal(row: InboundWebhook, integration: Integration | None) -> Decision | DealRead:
    """Everything that can be decided from our database; a DealRead when the deal's stage is needed."""
    found = _OBJECT.match(row.remote_object or "")
    entity, remote_id = (found.group(1), found.group(2)) if found else ("", "")
    if entity == "CONTACT" or row.event.startswith("ONCRMCONTACT"):
        return _ignored("contact changes are not pulled")
    if entity != "DEAL":
        return _ignored("the call names no deal" if not row.remote_object else f"{row.remote_object} is not a deal")
    if row.event == "ONCRMDEALDELETE":
        return _ignored("deal deletions are not pulled", deal_id=remote_id)
    link = _link_for(remote_id, integration)
    if link is None:
        return _ignored(f"no order is linked to deal {remote_id}", deal_id=remote_id)
    order = Order.objects.filter(pk=link.object_id).first()
    if order is None:
        return _ignored(f"order {link.object_id} linked to deal {remote_id} no longer exists", deal_id=remote_id)
    return DealRead(order=order, link=link, remote_id=remote_id)


def _apply_stage(read: DealRead, deal: Deal) -> Decision:
    """Map STAGE_ID → status; unknown stages are recorded, never guessed. A stage we sent coming back (our echo,
    answered or not) changes nothing, and neither does a Bitrix-side change older than the order's last status change
    here (the local change is on its way to the portal and wins)."""
    remote_id, stage = read.remote_id, deal.stage
    order = Order.objects.select_for_update().get(pk=read.order.pk)  # compare with the state we are about to change
    # Read again: the stages sent up to the moment the deal was read are noted on the link by now.
    link = ExternalLink.objects.filter(pk=read.link.pk).first() or read.link
    state = link.remote_state if isinstance(link.remote_state, dict) else {}
    base = {"deal_id": remote_id, "order_id": order.pk, "stage": stage}
    status = payloads.status_for_stage(stage, settings.BITRIX_STAGE_MAP)
    if status is None:
        return _ignored(f"unknown stage {stage!r}", **base)
    if status == order.status:
        return _ignored("order already has this status", echo=True, status=status, **base)
    # The stage we last wrote coming back (e.g. an old event arriving after a newer local change) is no new information.
    if stage == state.get("STAGE_ID"):
        return _ignored("stage is the one we last wrote", echo=True, status=order.status, **base)
    if echoes.sent_by_us(state, stage, deal.modified_at):
        return _ignored("stage is one we sent (our own update)", echo=True, status=order.status, **base)
    newer = echoes.newer_local_change(order, deal.modified_at)
    if newer is not None:
        return _ignored(
            f"the order's status changed here at {newer.isoformat()}, newer than the deal's change",
            status=order.status,
            deal_modified_at=deal.modified_at.isoformat() if deal.modified_at else None,
            **base,
        )
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
