"""An integration's configuration (endpoint, secret, rate limit): one validator for every place it is entered (model
clean → admin form, sync_bootstrap), and what delivery does when a stored value cannot be used: pause the integration
with the reason and end nothing."""

import logging
import re
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from integrations.clients.n8n import decode_secret
from integrations.errors import ConfigurationError
from integrations.models import Integration, IntegrationKind
from integrations.policy import Verdict
from integrations.ratelimit import parse_rate
from integrations.targets.base import Claimed, Outcome

log = logging.getLogger("integrations.worker")
REASON_PREFIX = "configuration error: "
# A paused integration is looked at again this often: a fix made past the admin (env, shell) is picked up by itself.
RECHECK_SECONDS = 60
_BITRIX_PATH = re.compile(r"^/rest/\d+/[^/\s]+/?$")

__all__ = ["ConfigurationError", "validate_integration_config", "integration_config_check"]


def validate_integration_config(*, kind: str, endpoint: str, secret: str, rate_limit: str) -> None:
    """Raise ValidationError {field: message} for values delivery could not use. Messages never quote a secret."""
    errors: dict[str, str] = {}
    if kind not in IntegrationKind.values:
        errors["kind"] = f"Unknown kind; expected one of {', '.join(IntegrationKind.values)}."
    parts = urlsplit(endpoint or "")
    if not endpoint:
        errors["endpoint"] = "An endpoint URL is required."
    elif parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in endpoint):
        errors["endpoint"] = "The endpoint must be an http(s) URL with a host, e.g. https://example.com/…"
    elif kind == IntegrationKind.BITRIX24 and not _BITRIX_PATH.match(parts.path):
        errors["endpoint"] = (
            "A Bitrix24 endpoint is the portal's inbound webhook URL: https://<portal>/rest/<user id>/<code>/"
        )
    if kind == IntegrationKind.N8N and not secret:
        errors["secret"] = "An n8n integration needs a signing secret (whsec_…)."
    elif secret:
        try:
            decode_secret(secret)
        except ConfigurationError as exc:
            errors["secret"] = str(exc)
    if rate_limit:
        try:
            parse_rate(rate_limit)
        except ConfigurationError as exc:
            errors["rate_limit"] = f"The {exc}"
    if errors:
        raise ValidationError(errors)


def delivery_config_error(integration: Integration) -> str:
    """What makes this integration's stored configuration unusable for delivery right now ('' when nothing): the
    same checks as the admin form, on the values delivery will use (BITRIX_RATE_LIMIT when the field is empty, the
    previous secret while it still signs)."""
    rate_limit = integration.rate_limit or (
        settings.BITRIX_RATE_LIMIT if integration.kind == IntegrationKind.BITRIX24 else ""
    )
    try:
        validate_integration_config(
            kind=integration.kind, endpoint=integration.endpoint, secret=integration.secret, rate_limit=rate_limit
        )
        expires = integration.previous_secret_expires_at
        if integration.previous_secret and expires and expires > timezone.now():
            decode_secret(integration.previous_secret)
    except ValidationError as exc:
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    except ConfigurationError as exc:
        return f"previous_secret: {exc}"
    return ""


def integration_config_check(*, integration: Integration) -> bool:
    """Before a delivery round: pause the integration when its configuration cannot be used (True: go on). A pause set
    for a configuration error is lifted here once the configuration is fine again, however it was fixed."""
    problem = delivery_config_error(integration)
    if problem:
        integration_pause_for_config(integration=integration, error=problem)
        return False
    if integration.disabled_reason.startswith(REASON_PREFIX):
        integration_config_fixed(integration=integration)
    return True


def integration_pause_for_config(*, integration: Integration, error: str) -> None:
    """Pause (not disable: rows stay due, nothing is skipped) with the reason, visible in admin and sync_status."""
    reason = (REASON_PREFIX + error)[:255]
    until = timezone.now() + timedelta(seconds=RECHECK_SECONDS)
    Integration.objects.filter(pk=integration.pk).update(paused_until=until, disabled_reason=reason)
    integration.paused_until, integration.disabled_reason = until, reason
    log.error("[WORKER] integration=%s paused: %s", integration.pk, reason)


def integration_config_fixed(*, integration: Integration) -> None:
    """Lift a pause that a configuration error set (other pauses and reasons are left alone)."""
    updated = Integration.objects.filter(pk=integration.pk, disabled_reason__startswith=REASON_PREFIX).update(
        paused_until=None, disabled_reason=""
    )
    if updated:
        integration.paused_until, integration.disabled_reason = None, ""
        log.info("[WORKER] integration=%s configuration fixed: pause lifted", integration.pk)


def outcomes_after_config_error(claimed: list[Claimed], exc: ConfigurationError) -> dict[int, Outcome]:
    """What the round had obtained stays; every other row goes back to due without burning an attempt."""
    back = Outcome(verdict=Verdict.DEFERRED, retry_after=RECHECK_SECONDS, error=REASON_PREFIX + str(exc))
    return {item.id: exc.outcomes.get(item.id) or back for item in claimed}
