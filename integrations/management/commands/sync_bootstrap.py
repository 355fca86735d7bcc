from django.core.management.base import BaseCommand, CommandError

from integrations.bootstrap import BootstrapError, integrations_bootstrap_from_env


class Command(BaseCommand):
    help = (
        "Create/refresh the Bitrix24 and default n8n integrations from BITRIX_* and N8N_* env vars. A field changed "
        "in the admin since the last run (or an integration disabled since) is kept and reported, unless --overwrite."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="apply every env value, also over fields changed in the admin and to integrations disabled since",
        )

    def handle(self, *args, **options):
        try:
            lines = integrations_bootstrap_from_env(overwrite=options["overwrite"])
        except BootstrapError as exc:
            raise CommandError(f"nothing written: {exc}") from None
        for line in lines or ["nothing configured (BITRIX_WEBHOOK_URL / N8N_WEBHOOK_URL unset)"]:
            self.stdout.write(line)
