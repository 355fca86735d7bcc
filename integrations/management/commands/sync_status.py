import json

from django.core.management.base import BaseCommand
from django.core.serializers.json import DjangoJSONEncoder

from integrations.management.commands._tables import age, cell, table
from integrations.models import IntegrationKind
from integrations.selectors import describe_work, operations_status

STATUS_COLUMNS = ["pending", "in_progress", "retrying", "synced", "failed", "dead", "superseded", "skipped"]


class Command(BaseCommand):
    help = "Sync status: per integration counts, oldest pending, dead, last success/failure, rate limit; workers, beat."

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", help="print the same document as GET /api/integrations/status/"
        )

    def handle(self, *args, **options):
        status = operations_status()
        if options["json"]:
            self.stdout.write(json.dumps(status, cls=DjangoJSONEncoder, indent=2))
            return
        self.stdout.write(self._integrations(status["integrations"]))
        self.stdout.write("")
        self.stdout.write(self._workers(status["workers"]))
        self.stdout.write("")
        self.stdout.write(self._beat(status["beat"]))
        self.stdout.write("")
        broker = status["broker"]
        self.stdout.write(
            f"Broker: {'reachable' if broker['reachable'] else 'UNREACHABLE'}, "
            f"queue length (LLEN celery): {cell(broker['queue_length'])}\n"
            f"Enabled (database): {_enabled_by_kind(status['integrations'], status['generated_at'])}\n"
            f"Work: {describe_work(status['work'])}"
        )

    def _integrations(self, integrations: list[dict]) -> str:
        if not integrations:
            return "Integrations: none configured (see `sync_bootstrap`)."
        headers = ["id", "name", "kind", "enabled", *STATUS_COLUMNS, "oldest open", "last success", "last failure"]
        rows, notes = [], []
        for i in integrations:
            counts = [i["counts"].get(s, 0) for s in STATUS_COLUMNS]
            rows.append(
                [i["id"], i["name"], i["kind"], i["enabled"], *counts, age(i["oldest_pending_age_seconds"])]
                + [i["last_success_at"], i["last_failure_at"]]
            )
            notes.append(f"  {i['name']}: endpoint {i['endpoint']}")
            if i["disabled_reason"]:  # on an enabled integration: why it is paused (e.g. a configuration error)
                notes.append(f"  {i['name']}: {'paused' if i['enabled'] else 'disabled'}: {i['disabled_reason']}")
            if i["paused_until"]:
                notes.append(f"  {i['name']}: paused until {cell(i['paused_until'])}")
            bucket = i["rate_limit"]
            if bucket:
                text = bucket.get("error") or f"{bucket['tokens']:g}/{bucket['burst']} tokens, {bucket['rate']:g}/s"
                notes.append(f"  {i['name']}: rate-limit bucket {text}")
            catchup = i.get("catchup")
            if catchup and catchup["last_run_at"]:
                lag, last = age(catchup["lag_seconds"]), cell(catchup["last_run_at"])
                calls = f"{catchup['last_calls']} calls, {catchup['calls_total']} in all"
                notes.append(f"  {i['name']}: catch-up lag {lag}, last run {last} {catchup['last_outcome']} ({calls})")
            elif catchup:
                notes.append(f"  {i['name']}: catch-up not run yet (beat task bitrix_catchup)")
        return "Integrations\n" + table(headers, rows) + "\n" + "\n".join(notes)

    def _workers(self, workers: list[dict]) -> str:
        if not workers:
            return "Workers: none has ever reported (is a Celery worker running?)."
        rows = [
            [w["name"], "ALIVE" if w["alive"] else "DOWN", w["state"], age(w["last_seen_age_seconds"])]
            + [w["pid"], w["concurrency"]]
            for w in workers
        ]
        return "Workers\n" + table(["name", "alive", "state", "last seen", "pid", "concurrency"], rows)

    def _beat(self, beat: dict) -> str:
        last = beat["last_seen_age_seconds"]
        seen = "never seen" if last is None else f"last heartbeat {age(last)} ago"
        head = f"Beat: {'ALIVE' if beat['alive'] else 'DOWN'} ({seen})"
        if beat.get("note"):
            head += f"\n  {beat['note']}"
        rows = [
            [t["name"], t["every_seconds"], t["last_run_at"], age(t["age_seconds"])]
            + [{None: "never ran", True: "OVERDUE", False: "ok"}[t["overdue"]]]
            for t in beat["tasks"]
        ]
        return head + "\n" + table(["task", "every s", "last run", "age", "state"], rows)


def _enabled_by_kind(integrations: list[dict], now) -> str:
    """`bitrix24=yes n8n=no` from the Integration rows (paused: enabled but waiting until paused_until)."""
    words = []
    for kind in IntegrationKind.values:
        mine = [i for i in integrations if i["kind"] == kind and i["enabled"]]
        running = [i for i in mine if not (i["paused_until"] and i["paused_until"] > now)]
        words.append(f"{kind}={'yes' if running else 'paused' if mine else 'no'}")
    return " ".join(words)
