"""Create or refresh the env-configured integrations (BITRIX_*, N8N_*) so a deploy needs no admin clicks."""

from django.conf import settings
from django.db import transaction

from integrations.clients.n8n import generate_secret
from integrations.models import Integration, IntegrationKind

BITRIX_NAME = "bitrix24"
N8N_NAME = "n8n-default"


@transaction.atomic
def integrations_bootstrap_from_env() -> list[str]:
    """Returns a line per integration touched (never with secrets)."""
    lines = []
    if settings.BITRIX_WEBHOOK_URL:
        integration, created = Integration.objects.update_or_create(
            name=BITRIX_NAME,
            defaults={
                "kind": IntegrationKind.BITRIX24,
                "endpoint": settings.BITRIX_WEBHOOK_URL,
                "enabled": settings.BITRIX_ENABLED,
                "rate_limit": settings.BITRIX_RATE_LIMIT,
            },
        )
        lines.append(f"{'created' if created else 'updated'} {integration.name} (enabled={integration.enabled})")
    if settings.N8N_WEBHOOK_URL:
        integration = Integration.objects.filter(name=N8N_NAME).first() or Integration(name=N8N_NAME)
        created = integration.pk is None
        integration.kind = IntegrationKind.N8N
        integration.endpoint = settings.N8N_WEBHOOK_URL
        integration.enabled = settings.N8N_ENABLED
        integration.secret = settings.N8N_WEBHOOK_SECRET or integration.secret or generate_secret()
        integration.save()
        lines.append(f"{'created' if created else 'updated'} {integration.name} (enabled={integration.enabled})")
    return lines
