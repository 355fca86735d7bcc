from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from integrations import selectors, services
from integrations.management.commands._tables import find_integration, parse_when, table
from integrations.models import IntegrationSync, SyncStatus

RETRYABLE = [SyncStatus.DEAD, SyncStatus.FAILED, SyncStatus.RETRYING]


class Command(BaseCommand):
    help = (
        "Deliver dead/failed rows again (same event id; receivers dedupe on it). Filters combine. Rows whose replay "
        "would send stale state to Bitrix24 are skipped with the reason (use `resync` for those). `--skipped` also "
        "replays the events an n8n integration missed while it was disabled."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--status",
            action="append",
            choices=[str(s) for s in RETRYABLE],
            help="dead, failed or retrying (repeatable; default: dead and failed)",
        )
        parser.add_argument(
            "--skipped", action="store_true", help="also skipped rows (events an n8n integration missed while disabled)"
        )
        parser.add_argument("--integration", help="integration id or name")
        parser.add_argument("--object", help="e.g. order:41 or user:7")
        parser.add_argument("--since", help="rows created at or after this ISO date/time")
        parser.add_argument("--limit", type=int, default=None, help="at most this many rows")
        parser.add_argument("--dry-run", action="store_true", help="list what would be retried, change nothing")

    def handle(self, *args, **options):
        rows = selectors.sync_list(
            ref=self._object(options["object"]),
            integration_id=self._integration(options["integration"]),
            since=parse_when(options["since"]) if options["since"] else None,
        ).filter(status__in=self._statuses(options))
        # Oldest first, so an object's rows become due again in their original order.
        rows = list(rows.order_by("id")[: options["limit"]] if options["limit"] else rows.order_by("id"))
        table_rows, retried = [], 0
        for sync in rows:
            reason = retry_refused(sync)
            if reason:
                action = f"skipped: {reason}"
            elif options["dry_run"]:
                action = "would retry"
            else:
                try:
                    services.sync_retry(sync_id=sync.pk)
                    action, retried = "retried", retried + 1
                except services.RetryRefused as exc:  # changed since it was listed
                    action = f"skipped: {exc}"
            table_rows.append(
                [sync.pk, sync.integration.name, f"{sync.object_type}:{sync.object_id}", sync.event_type]
                + [sync.sequence, sync.status, sync.attempts, sync.last_error, action]
            )
        if table_rows:
            headers = ["id", "integration", "object", "event", "seq", "status", "attempts", "last error", "action"]
            self.stdout.write(table(headers, table_rows))
        verb = "would retry" if options["dry_run"] else "retried"
        count = sum(1 for r in table_rows if r[-1] == "would retry") if options["dry_run"] else retried
        self.stdout.write(f"{len(rows)} rows matched; {verb} {count}.")

    def _statuses(self, options) -> list[str]:
        statuses = options["status"] or [SyncStatus.DEAD, SyncStatus.FAILED]
        return [*statuses, SyncStatus.SKIPPED] if options["skipped"] else statuses

    def _object(self, text: str | None):
        if not text:
            return None
        try:
            return selectors.parse_object_ref(text)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages))

    def _integration(self, text: str | None) -> int | None:
        return find_integration(text).pk if text else None


def retry_refused(sync: IntegrationSync) -> str | None:
    """Why this row is not retried, or None (the same rule services.sync_retry applies on the locked row)."""
    return selectors.stale_state_retry_reason(sync)
