"""bitrix_duplicates [--order N] [--fix]: find (and on request delete) duplicate Bitrix24 deals of our orders."""

from django.core.management.base import BaseCommand, CommandError

from integrations.clients.bitrix24 import mask_webhook_url
from integrations.management.commands._tables import table
from integrations.models import Integration, IntegrationKind
from integrations.reconcile import ReconcileError, find_duplicates, fix_duplicates
from integrations.targets.bitrix_limits import RateLimitTimeout


class Command(BaseCommand):
    help = (
        "List Bitrix24 deals that duplicate one order (same ORIGIN_ID, or titled 'Order #N'). Dry run by default; "
        "--fix deletes the extra deals and keeps the linked one (or the lowest id, which then gets linked)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--order", type=int, help="only this order id")
        parser.add_argument("--fix", action="store_true", help="delete the extra deals (default: dry run)")

    def handle(self, *args, **options):
        integrations = list(Integration.objects.filter(kind=IntegrationKind.BITRIX24, enabled=True).order_by("id"))
        if not integrations:
            raise CommandError("No enabled bitrix24 integration.")
        failures = 0
        for integration in integrations:
            self.stdout.write(f"{integration.name} ({mask_webhook_url(integration.endpoint)})")
            try:
                groups = find_duplicates(integration, order_id=options["order"])
            except (ReconcileError, RateLimitTimeout) as exc:
                failures += 1
                self.stderr.write(f"  could not read deals: {exc}")
                continue
            if not groups:
                self.stdout.write("  no duplicate deals found")
                continue
            verb = "delete" if options["fix"] else "would delete"
            rows = [
                [
                    g["order_id"],
                    ",".join(g["deal_ids"]),
                    g["linked_id"] or "-",
                    _action(g, verb),
                ]
                for g in groups
            ]
            self.stdout.write(table(["ORIGIN_ID", "DEALS", "LINKED", "ACTION"], rows, max_width=100))
            if not options["fix"]:
                extra = sum(len(g["extra"]) for g in groups)
                self.stdout.write(f"{len(groups)} order(s), {extra} extra deal(s). Dry run: nothing deleted (--fix).")
                continue
            try:
                done = fix_duplicates(groups)
            except RateLimitTimeout as exc:
                failures += 1
                self.stderr.write(f"  stopped: {exc}")
                continue
            self.stdout.write(
                table(
                    ["ORIGIN_ID", "DEAL", "RESULT", "DETAIL"],
                    [[r["order_id"], r["deal_id"], r["action"], r["detail"]] for r in done],
                    max_width=100,
                )
            )
            failures += sum(1 for r in done if r["action"] in ("delete failed", "link failed"))
        if failures:
            raise CommandError(f"{failures} problem(s); see above.")


def _action(group: dict, verb: str) -> str:
    parts = [f"keep {group['keep']}" + ("" if group["linked_id"] else " (will be linked)")]
    if group["extra"]:
        parts.append(f"{verb} {','.join(group['extra'])}")
    if group["linked_elsewhere"]:
        parts.append(f"leave {','.join(group['linked_elsewhere'])} (linked to another order)")
    if group.get("stale_link"):
        parts = [f"order linked to missing deal {group['stale_link']}: nothing deleted"]
    return "; ".join(parts)
