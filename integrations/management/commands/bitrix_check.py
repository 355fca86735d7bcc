"""bitrix_check: the Bitrix24 configuration (masked) and a credentials test (profile, crm.deal.fields)."""

import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from integrations.clients.bitrix24 import mask_webhook_url
from integrations.errors import ConfigurationError
from integrations.inbound.auth import mask_text
from integrations.models import Integration, IntegrationKind
from integrations.reconcile import client_for
from integrations.targets.bitrix_limits import RateLimitTimeout


class Command(BaseCommand):
    help = (
        "Check Bitrix24 settings and credentials; exits non-zero when the portal rejects them. Never prints the code."
    )

    def handle(self, *args, **options):
        integrations = list(Integration.objects.filter(kind=IntegrationKind.BITRIX24).order_by("id"))
        if not integrations and settings.BITRIX_WEBHOOK_URL:
            integrations = [Integration(kind=IntegrationKind.BITRIX24, name="(BITRIX_WEBHOOK_URL)", enabled=False)]
            integrations[0].endpoint = settings.BITRIX_WEBHOOK_URL
        self.stdout.write("Configuration")
        self.stdout.write(f"  BITRIX_ENABLED        {'yes' if settings.BITRIX_ENABLED else 'no'}")
        url = settings.BITRIX_WEBHOOK_URL
        self.stdout.write(f"  BITRIX_WEBHOOK_URL    {mask_webhook_url(url) if url else '-'}")
        self.stdout.write(f"  originator            {settings.BITRIX_ORIGINATOR_ID}")
        self.stdout.write(f"  default rate limit    {settings.BITRIX_RATE_LIMIT} (requests/s / burst)")
        stage_map = ", ".join(f"{k}→{v}" for k, v in settings.BITRIX_STAGE_MAP.items())
        self.stdout.write(f"  stage map             {stage_map}")
        self.stdout.write(f"  inbound token set     {'yes' if settings.BITRIX_WEBHOOK_TOKEN else 'no'}")
        self.stdout.write(f"  application token set {'yes' if settings.BITRIX_APPLICATION_TOKEN else 'no'}")
        if not integrations:
            raise CommandError("No bitrix24 integration and no BITRIX_WEBHOOK_URL configured.")
        problems = []
        for integration in integrations:
            problem = self._check(integration)
            if problem:
                problems.append(problem)
        if problems:
            raise CommandError("; ".join(problems))
        self.stdout.write("OK")

    def _check(self, integration: Integration) -> str:
        code = _code_of(integration.endpoint)
        safe = lambda text: mask_text(str(text), [code] if code else [], json_pairs=False)  # noqa: E731
        self.stdout.write(f"\nIntegration {integration.name}")
        self.stdout.write(f"  enabled     {'yes' if integration.enabled else 'no'}")
        if integration.disabled_reason:
            self.stdout.write(f"  disabled    {safe(integration.disabled_reason)}")
        self.stdout.write(f"  webhook     {mask_webhook_url(integration.endpoint)}")
        self.stdout.write(f"  rate limit  {integration.rate_limit or settings.BITRIX_RATE_LIMIT}")
        try:
            client = client_for(integration, purpose="check")
        except ConfigurationError as exc:  # e.g. a rate-limit typo: say what is expected instead of a traceback
            return f"{integration.name}: configuration error: {exc}"
        for method in ("profile", "crm.deal.fields"):
            try:
                response = client.call(method)
            except RateLimitTimeout as exc:
                return f"{integration.name}: {exc}"
            if response.auth_failed:
                code_name = response.error or "INVALID_CREDENTIALS"
                self.stderr.write(f"  {method}: credentials rejected ({code_name})")
                return (
                    f"{integration.name}: credentials rejected ({code_name}); check the webhook URL and its code "
                    "(Bitrix24 → Developer resources → Inbound webhook)"
                )
            if not response.ok:
                error = response.error or response.http.error_class or f"HTTP {response.http.status}"
                detail = safe(f"{error} {response.error_description or response.http.error}".strip())
                self.stderr.write(f"  {method}: failed {detail}")
                return f"{integration.name}: {method} failed ({detail})"
            self.stdout.write(f"  {method:<15} ok{_summary(method, response.result)}")
        return ""


def _code_of(endpoint: str) -> str:
    found = re.match(r"^/rest/\d+/([^/]+)", urlsplit(endpoint or "").path)
    return found.group(1) if found else ""


def _summary(method: str, result) -> str:
    if method == "profile" and isinstance(result, dict):
        admin = " admin" if result.get("ADMIN") else ""
        return f" (user {result.get('ID')}{admin})"
    if method == "crm.deal.fields" and isinstance(result, dict):
        missing = [f for f in ("ORIGINATOR_ID", "ORIGIN_ID", "STAGE_ID", "OPPORTUNITY") if f not in result]
        return f" ({len(result)} fields" + (f"; missing {', '.join(missing)})" if missing else ")")
    return ""
