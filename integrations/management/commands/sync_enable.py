from django.core.management.base import BaseCommand

from integrations.management.commands._tables import find_integration
from integrations.missed import integration_reenabled
from integrations.models import Integration


class Command(BaseCommand):
    help = (
        "Enable an integration (Bitrix24 then gets the latest state of what it missed while disabled; n8n replays "
        "nothing, see sync_retry --skipped), or disable it with --disable --reason."
    )

    def add_arguments(self, parser):
        parser.add_argument("integration", help="integration id or name")
        parser.add_argument("--disable", action="store_true", help="disable it instead (its events are skipped)")
        parser.add_argument("--reason", default="disabled by an operator", help="with --disable: shown everywhere")

    def handle(self, *args, **options):
        integration = find_integration(options["integration"])
        if options["disable"]:
            Integration.objects.filter(pk=integration.pk).update(enabled=False, disabled_reason=options["reason"][:255])
            self.stdout.write(f"{integration.name} disabled: {options['reason'][:255]}")
            return
        # Only the call that flips it catches up (a second enable finds it enabled already).
        if not Integration.objects.filter(pk=integration.pk, enabled=False).update(enabled=True):
            self.stdout.write(f"{integration.name} is enabled already")
            return
        integration.enabled = True
        self.stdout.write(integration_reenabled(integration=integration))
