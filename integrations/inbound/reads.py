"""Reading the deals that stored inbound calls name: one batch of crm.deal.get, per deal its stage and DATE_MODIFY or
the failed Decision for its calls. Called with no transaction open and no row lock held."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings

from integrations import config, policy
from integrations.errors import ConfigurationError
from integrations.inbound import echoes
from integrations.models import InboundStatus, Integration, IntegrationKind
from integrations.targets.bitrix_limits import RateLimitTimeout, bitrix_client_for


@dataclass
class Decision:
    """What becomes of one stored call: its status, result details, error, and whether a retry can help."""

    status: str
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    retryable: bool = False
    rate_limited: bool = False


@dataclass
class Deal:
    """What the portal says about a deal: its stage and when it was last modified (DATE_MODIFY, portal clock)."""

    stage: str
    modified_at: datetime | None = None


def read_deals(
    integration: Integration | None, deal_ids: list[str], *, request_id: str
) -> dict[str, Deal | None | Decision]:
    """{deal id: its Deal, or None if the portal has no such deal, or the failed Decision for that deal's rows}."""
    portal = portal_integration(integration)
    if portal is None:
        failed = Decision(
            InboundStatus.FAILED, error="no Bitrix24 integration or BITRIX_WEBHOOK_URL configured", retryable=True
        )
        return dict.fromkeys(deal_ids, failed)
    try:
        client = bitrix_client_for(portal, request_id=request_id)
    except ConfigurationError as exc:  # an operator's typo: pause with the reason; the calls wait, burning no attempt
        if portal.pk is not None:
            config.integration_pause_for_config(integration=portal, error=str(exc))
        error = f"{config.REASON_PREFIX}{exc}"[:500]  # rate_limited: not the portal failing, no attempt counted
        return dict.fromkeys(deal_ids, Decision(InboundStatus.FAILED, error=error, retryable=True, rate_limited=True))
    try:
        response = client.batch({f"d{deal_id}": ("crm.deal.get", {"id": deal_id}) for deal_id in deal_ids})
    except RateLimitTimeout as exc:
        return dict.fromkeys(deal_ids, rate_limited(str(exc)))
    if response.rate_limited:
        return dict.fromkeys(deal_ids, rate_limited(f"crm.deal.get: {response.error or response.http.status}"))
    if not response.ok:
        error = response.error or response.http.error_class or f"HTTP {response.http.status}"
        detail = response.error_description or response.http.error
        failed = Decision(InboundStatus.FAILED, error=f"crm.deal.get: {error} {detail}".strip()[:500], retryable=True)
        return dict.fromkeys(deal_ids, failed)
    results, errors = response.results, response.errors
    stages: dict[str, Deal | None | Decision] = {}
    for deal_id in deal_ids:
        key = f"d{deal_id}"
        deal = results.get(key)
        if isinstance(deal, dict):
            stages[deal_id] = Deal(str(deal.get("STAGE_ID") or ""), echoes.parse_time(deal.get("DATE_MODIFY")))
            continue
        error = errors.get(key) if isinstance(errors.get(key), dict) else {}
        code, detail = str(error.get("error") or ""), str(error.get("error_description") or "")
        if code == "NOT_FOUND" or "not found" in detail.lower():
            stages[deal_id] = None
        else:
            stages[deal_id] = Decision(
                InboundStatus.FAILED,
                error=f"crm.deal.get: {code or 'no result'} {detail}".strip()[:500],
                retryable=True,
                rate_limited=code in policy.RATE_LIMIT_ERRORS,
            )
    return stages


def rate_limited(error: str) -> Decision:
    return Decision(InboundStatus.FAILED, error=f"{error} (rate limited)", retryable=True, rate_limited=True)


def portal_integration(integration: Integration | None = None) -> Integration | None:
    """The portal to read: the enabled bitrix24 Integration, else one made from BITRIX_WEBHOOK_URL (not saved); None
    when neither is configured. Its client comes from bitrix_client_for, like every other."""
    if integration is None:
        integration = Integration.objects.filter(kind=IntegrationKind.BITRIX24, enabled=True).order_by("id").first()
    if integration is None and settings.BITRIX_WEBHOOK_URL:
        integration = Integration(kind=IntegrationKind.BITRIX24, endpoint=settings.BITRIX_WEBHOOK_URL)
    return integration if integration is not None and integration.endpoint else None
