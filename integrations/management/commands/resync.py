from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.test.utils import override_settings

from integrations import outbox, selectors
from integrations.management.commands._tables import find_integration, parse_when
from integrations.models import EventType

# What "changed since" means per type: users have no updated_at, so --since picks users who joined since then.
SINCE_FIELD = {"order": "updated_at", "user": "date_joined"}


class Command(BaseCommand):
    help = (
        "Record a fresh `updated` event (current state, no changes) for objects so every target converges to the "
        "current state. Examples: resync order 41 | resync order --since 2026-01-01T00:00 | resync user --all | "
        "resync order --all --integration bitrix (that integration only; by default every integration that wants "
        "the event gets it)"
    )

    def add_arguments(self, parser):
        parser.add_argument("object_type", choices=sorted(selectors.SYNCED_MODELS))
        parser.add_argument("object_id", nargs="?", help="one object")
        parser.add_argument("--since", help="objects changed at or after this ISO date/time (users: joined)")
        parser.add_argument("--all", action="store_true", help="every object of the type")
        parser.add_argument("--integration", help="only this integration (id or name); default: all that want it")
        parser.add_argument("--dry-run", action="store_true", help="count the objects, record nothing")

    def handle(self, *args, **options):
        object_type = options["object_type"]
        chosen = [bool(options["object_id"]), bool(options["since"]), options["all"]]
        if sum(chosen) != 1:
            raise CommandError("give exactly one of: an object id, --since, --all")
        objects = self._objects(object_type, options)
        self.integrations = [find_integration(options["integration"])] if options["integration"] else None
        total = objects.count()
        if options["dry_run"]:
            self.stdout.write(f"would resync {total} {object_type}(s)")
            return
        if options["object_id"]:
            recorded = self._record(objects)
        else:
            # Bulk: no wake-up message per row (that would flood the broker); the sweeper picks the rows up in seconds.
            with override_settings(SYNC_WAKEUP_ENABLED=False):
                recorded = self._record(objects)
        self.stdout.write(f"resynced {total} {object_type}(s): {recorded} sync rows recorded")

    def _objects(self, object_type: str, options):
        if options["object_id"]:
            try:
                ref = selectors.object_ref(object_type, options["object_id"])
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages))
        else:
            ref = selectors.object_ref(object_type, 1)
        objects = ref.content_type.model_class()._default_manager.order_by("pk")
        if object_type == "user":
            objects = objects.filter(is_staff=False)  # staff accounts are never synced
        if options["object_id"]:
            objects = objects.filter(pk=ref.object_id)
            if not objects.exists():
                raise CommandError(f"{ref} does not exist (or is staff); a deleted object had its `deleted` event")
        elif options["since"]:
            objects = objects.filter(**{f"{SINCE_FIELD[object_type]}__gte": parse_when(options["since"])})
        return objects

    def _record(self, objects) -> int:
        recorded = 0
        for n, obj in enumerate(objects.iterator(chunk_size=500), start=1):
            recorded += len(outbox.record(obj, EventType.UPDATED, changes={}, integrations=self.integrations))
            if n % 1000 == 0:
                self.stdout.write(f"  {n} objects…")
        return recorded
