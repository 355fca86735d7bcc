import time

from django.core.management.base import BaseCommand

from integrations import dispatcher


class Command(BaseCommand):
    help = "Deliver due syncs in this process (tests, demo, emergencies). --until-idle stops when nothing is due."

    def add_arguments(self, parser):
        parser.add_argument("--until-idle", action="store_true", help="stop when no row is due now")
        parser.add_argument("--wait-all", action="store_true", help="also wait for rows scheduled for later retries")
        parser.add_argument("--max-seconds", type=float, default=300.0)
        parser.add_argument("--integration", type=int, default=None)

    def handle(self, *args, **options):
        deadline = time.monotonic() + options["max_seconds"]
        total = 0
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            total += dispatcher.drain(max_seconds=left, integration_id=options["integration"])
            if options["wait_all"] and dispatcher.open_rows_remaining():
                time.sleep(0.5)
                continue
            if options["until_idle"] or options["wait_all"]:
                break
            time.sleep(1.0)
        self.stdout.write(f"handled {total} syncs; open rows left: {dispatcher.open_rows_remaining()}")
