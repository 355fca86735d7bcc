"""bitrix_backfill: send every existing customer and order to a Bitrix24 integration (and, on request, n8n) that has
never seen them; resumable, with a progress bar and a summary table."""

import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from integrations.backfill import (
    BY_ORIGIN,
    CHUNK,
    BackfillError,
    backfill_check,
    backfill_delivered,
    backfill_progress,
    backfill_start,
)
from integrations.management.commands._tables import find_integration, table
from integrations.models import Integration, IntegrationKind
from integrations.unlinked import KINDS

POLL_SECONDS = 1.0
STALL_HINT_SECONDS = 60.0
ADOPTED_SHOWN = 20


class Command(BaseCommand):
    help = (
        "Onboard an existing shop: queue a `created` event for every customer and order that the Bitrix24 "
        "integration has never seen, adopting the deals and contacts the portal already has for them (ORIGIN_ID, "
        "or an old `Order #N` title). Resumable: run it again after a crash or Ctrl-C. --n8n NAME also sends "
        "`created` snapshots marked backfill to that n8n integration (only it, when --integration is not given)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--integration", help="the Bitrix24 integration (id or name); default: the only one")
        parser.add_argument("--n8n", metavar="NAME", help="also backfill this n8n integration (id or name)")
        parser.add_argument("--no-wait", action="store_true", help="queue and exit; the workers deliver")
        parser.add_argument("--watch", action="store_true", help="queue nothing, show the delivery progress")
        parser.add_argument("--chunk", type=int, default=CHUNK, help=f"objects per transaction (default {CHUNK})")

    def handle(self, *args, **options):
        if options["chunk"] < 1:
            raise CommandError(f"--chunk must be at least 1, got {options['chunk']}")
        integrations = self._integrations(options)
        if not options["watch"]:
            checks = {}
            for integration in integrations:  # every check before anything is queued
                try:
                    checks[integration.pk] = backfill_check(integration=integration)
                except BackfillError as exc:
                    raise CommandError(str(exc)) from exc
            runs = [self._start(integration, options["chunk"]) for integration in integrations]
            for run in runs:
                run.portal_calls += checks[run.integration.pk]
            for run in runs:
                self._report_adopted(run)
        if not options["no_wait"]:
            self._wait(integrations)
        self._summary(integrations, runs if not options["watch"] else [])

    def _integrations(self, options) -> list[Integration]:
        chosen = []
        if options["integration"] or not options["n8n"]:
            chosen.append(_bitrix(options["integration"]))
        if options["n8n"]:
            n8n = _find(options["n8n"])
            if n8n.kind != IntegrationKind.N8N:
                raise CommandError(f"--n8n {options['n8n']!r} is a {n8n.kind} integration, not n8n")
            chosen.append(n8n)
        return chosen

    def _start(self, integration: Integration, chunk: int):
        self.stdout.write(f"{integration.name}: checking and queueing (chunks of {chunk}) …")
        total = sum(model.objects.filter(scope).count() for model, scope in KINDS)
        bar = tqdm(total=total, desc=f"queue {integration.name}", unit="obj", file=self.stderr._out, dynamic_ncols=True)
        try:
            return backfill_start(
                integration=integration, chunk=chunk, on_chunk=lambda name, n: bar.update(n), checked=True
            )
        except BackfillError as exc:
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt as exc:
            raise CommandError(
                "interrupted while queueing: the chunks committed so far stay queued (and are being delivered), the "
                "open one was rolled back; run the command again to go on"
            ) from exc
        finally:
            bar.close()

    def _report_adopted(self, run) -> None:
        name = run.integration.name
        if run.adopted:
            self.stdout.write(f"{name}: adopted {len(run.adopted)} existing remote object(s):")
            rows = [[a["kind"], a["object_id"], a["remote_id"], a["by"]] for a in run.adopted[:ADOPTED_SHOWN]]
            self.stdout.write(table(["OBJECT", "ID", "REMOTE ID", "FOUND BY"], rows))
            if len(run.adopted) > ADOPTED_SHOWN:
                self.stdout.write(f"… and {len(run.adopted) - ADOPTED_SHOWN} more (the worker log lists each one)")
        for item in run.conflicts:
            self.stderr.write(
                f"{name}: {item['kind']} {item['object_id']}: remote {item['remote_id']} is linked to another object; "
                "not adopted, a new one is created"
            )
        if run.duplicates:
            self.stderr.write(
                f"{name}: {len(run.duplicates)} object(s) have more than one remote candidate (the lowest id was "
                "adopted); see manage.py bitrix_duplicates"
            )

    def _wait(self, integrations: list[Integration]) -> None:
        progress = backfill_progress(integrations=integrations)
        if not progress["open"]:
            return
        self.stdout.write("Waiting for the workers to deliver (Ctrl-C stops waiting; delivery goes on) …")
        last_done, last_change = progress["done"], time.monotonic()
        bar = tqdm(
            total=progress["total"],
            initial=progress["done"],
            desc="delivered",
            unit="obj",
            file=self.stderr._out,
            dynamic_ncols=True,
        )
        try:
            while progress["open"]:
                time.sleep(POLL_SECONDS)
                progress = backfill_progress(integrations=integrations)
                bar.total = progress["total"]
                bar.update(progress["done"] - bar.n)
                if progress["done"] != last_done:
                    last_done, last_change = progress["done"], time.monotonic()
                elif time.monotonic() - last_change > STALL_HINT_SECONDS:
                    bar.write("no progress for a minute: is a Celery worker running (or manage.py process_syncs)?")
                    last_change = time.monotonic()
        except KeyboardInterrupt:
            bar.write("stopped waiting; the workers go on delivering (bitrix_backfill --watch shows the progress)")
        finally:
            bar.close()

    def _summary(self, integrations: list[Integration], runs: list) -> None:
        by_integration = {run.integration.pk: run for run in runs}
        rows = []
        for integration in integrations:
            run = by_integration.get(integration.pk)
            delivered = backfill_delivered(integration=integration)
            for kind in ("user", "order"):
                counts = run.counts.get(kind, {}) if run else {}
                sent = delivered.get(kind, {})
                rows.append(
                    [
                        integration.name,
                        kind,
                        counts.get("objects", "-"),
                        counts.get("already", "-"),
                        counts.get("adopted_origin", "-"),
                        counts.get("adopted_title", "-"),
                        counts.get("queued", "-"),
                        sent.get("total", 0),
                        sent.get("synced", 0),
                        sent.get("failed", 0),
                    ]
                )
        self.stdout.write("")
        headers = ["INTEGRATION", "KIND", "OBJECTS", "ALREADY", f"ADOPTED {BY_ORIGIN}", "ADOPTED TITLE", "QUEUED NOW"]
        self.stdout.write(table([*headers, "BACKFILL ROWS", "DELIVERED", "FAILED"], rows))
        calls = sum(run.portal_calls for run in runs)
        if runs:
            self.stdout.write(f"Portal reads before queueing: {calls} call(s). Failed rows: manage.py sync_status.")


def _find(text: str) -> Integration:
    try:
        return find_integration(text)
    except CommandError as exc:
        raise CommandError(f"{exc}; see manage.py sync_status for the configured integrations") from exc


def _bitrix(text: str | None) -> Integration:
    if text:
        integration = _find(text)
        if integration.kind != IntegrationKind.BITRIX24:
            raise CommandError(f"integration {integration.name} is {integration.kind}, not bitrix24 (use --n8n)")
        return integration
    found = list(Integration.objects.filter(kind=IntegrationKind.BITRIX24).order_by("id")[:2])
    if len(found) != 1:
        raise CommandError("name the Bitrix24 integration with --integration" if found else "no bitrix24 integration")
    return found[0]
