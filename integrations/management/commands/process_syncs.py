import time

from django.core.management.base import BaseCommand

from integrations import dispatcher
from integrations.inbound.processing import inbound_drain
from integrations.selectors import describe_work, work_status


class Command(BaseCommand):
    help = (
        "Deliver due syncs and process waiting inbound calls in this process (tests, demo, emergencies). "
        "--until-idle stops when nothing is due now."
    )

    def add_arguments(self, parser):
        parser.add_argument("--until-idle", action="store_true", help="stop when no row and no inbound call is due now")
        parser.add_argument(
            "--wait-all", action="store_true", help="also wait for rows and inbound calls scheduled for later retries"
        )
        parser.add_argument("--max-seconds", type=float, default=300.0)
        parser.add_argument("--integration", type=int, default=None)

    def handle(self, *args, **options):
        deadline = time.monotonic() + options["max_seconds"]
        total = calls = 0
        while time.monotonic() < deadline:
            handled = dispatcher.drain(max_seconds=deadline - time.monotonic(), integration_id=options["integration"])
            applied = inbound_drain(max_seconds=max(deadline - time.monotonic(), 0.0))
            total, calls = total + handled, calls + applied
            if applied:
                continue  # a change applied from Bitrix24 made new syncs: deliver them too
            if options["wait_all"] and not work_status()["idle"]:
                time.sleep(0.5)
                continue
            if options["until_idle"] or options["wait_all"]:
                break
            time.sleep(1.0)
        self.stdout.write(f"handled {total} syncs and {calls} inbound calls; {describe_work(work_status())}")
