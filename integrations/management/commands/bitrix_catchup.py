"""bitrix_catchup: read back deal changes made in Bitrix24 since the catch-up cursor and apply them (what the beat task
bitrix_catchup does every 5 minutes), until every page is read; --since rewinds the cursor first."""

import re
import time
from datetime import datetime, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from integrations.inbound.catchup import catchup_rewind, catchup_run
from integrations.models import CatchupState, Integration, IntegrationKind

_AGO = re.compile(r"^(\d+)\s*([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
CAPACITY_WAIT_SECONDS = 2.0  # between runs that found no spare rate-limit capacity


def parse_since(text: str) -> datetime:
    """`30m`, `6h`, `2d` (that long ago) or an ISO 8601 time with its offset; ValueError with what is expected."""
    found = _AGO.match(text.strip().lower())
    if found:
        return timezone.now() - timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError(f"--since takes e.g. 30m, 6h, 2d or 2026-11-30T08:00:00+00:00 (with its offset); got {text!r}")
    return moment


class Command(BaseCommand):
    help = (
        "Apply deal stage changes made in Bitrix24 whose event post never reached us (from the catch-up cursor). "
        "Example: bitrix_catchup --since 6h"
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", help="rewind the cursor first: 30m, 6h, 2d, or an ISO time with offset")
        parser.add_argument("--integration", help="id or name (default: every enabled bitrix24 integration)")
        parser.add_argument("--max-runs", type=int, default=1000, help="stop after this many runs (default 1000)")

    def handle(self, *args, **options):
        portals = Integration.objects.filter(kind=IntegrationKind.BITRIX24).exclude(endpoint="")
        if options["integration"]:
            key = options["integration"]
            portals = portals.filter(pk=int(key)) if key.isdigit() else portals.filter(name=key)
        else:
            portals = portals.filter(enabled=True)
        portals = list(portals.order_by("id"))
        if not portals:
            raise CommandError("No enabled bitrix24 integration with a webhook URL (see sync_bootstrap).")
        since = None
        if options["since"]:
            try:
                since = parse_since(options["since"])
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        failed = []
        for integration in portals:
            if since is not None:
                catchup_rewind(integration=integration, since=since)
                self.stdout.write(f"{integration.name}: cursor set to {since.isoformat()}")
            outcome = self._catch_up(integration, options["max_runs"])
            if outcome.startswith("failed") or outcome == "busy":
                failed.append(f"{integration.name}: {outcome}")
        if failed:
            raise CommandError("; ".join(failed))

    def _catch_up(self, integration: Integration, max_runs: int) -> str:
        calls = applied = read = 0
        outcome = "not run"
        for _ in range(max(1, max_runs)):
            result = catchup_run(integration=integration)
            calls, applied, read, outcome = (
                calls + result.calls,
                applied + result.applied,
                read + result.read,
                result.outcome,
            )
            if result.outcome == "no spare capacity":
                time.sleep(CAPACITY_WAIT_SECONDS)
            elif result.outcome != "more":
                break
        cursor = CatchupState.objects.filter(integration=integration).values_list("cursor", flat=True).first()
        self.stdout.write(
            f"{integration.name}: {outcome}; {calls} calls, {read} deals read, {applied} orders changed; "
            f"cursor {cursor.isoformat() if cursor else '-'}"
        )
        return outcome
