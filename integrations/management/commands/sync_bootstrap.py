from django.core.management.base import BaseCommand

from integrations.bootstrap import integrations_bootstrap_from_env


class Command(BaseCommand):
    help = "Create/refresh the Bitrix24 and default n8n integrations from BITRIX_* and N8N_* env vars."

    def handle(self, *args, **options):
        lines = integrations_bootstrap_from_env()
        for line in lines or ["nothing configured (BITRIX_WEBHOOK_URL / N8N_WEBHOOK_URL unset)"]:
            self.stdout.write(line)
