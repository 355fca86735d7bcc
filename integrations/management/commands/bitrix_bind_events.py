from django.core.management.base import BaseCommand, CommandError

from integrations.inbound.auth import mask_text
from integrations.inbound.reads import portal_integration
from integrations.targets.bitrix_limits import bitrix_client_for

EVENTS = ("ONCRMDEALUPDATE", "ONCRMDEALADD", "ONCRMDEALDELETE", "ONCRMCONTACTUPDATE")
_APP_CONTEXT_HINT = (
    "event.bind works only with application (OAuth) authorisation; with an incoming webhook configure an "
    "outgoing webhook in Bitrix24 for these events instead and set BITRIX_APPLICATION_TOKEN from it"
)


class Command(BaseCommand):
    help = "Bind Bitrix24 CRM events to our POST /bitrix/webhook (--list shows bindings, --unbind removes ours)."

    def add_arguments(self, parser):
        parser.add_argument("--handler-url", help="public URL of our /bitrix/webhook (required to bind or unbind)")
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--list", action="store_true", help="show the portal's event bindings")
        action.add_argument("--unbind", action="store_true", help="remove the bindings of --handler-url")
        parser.add_argument("--event", action="append", dest="events", help=f"event to (un)bind; default {EVENTS}")

    def handle(self, *args, **options):
        integration = portal_integration()
        if integration is None:
            raise CommandError("No enabled bitrix24 integration and no BITRIX_WEBHOOK_URL configured.")
        client = bitrix_client_for(integration, request_id="bind", wait_on_rate_limit=True)
        if options["list"]:
            return self._list(client)
        handler = options["handler_url"]
        if not handler:
            raise CommandError("--handler-url is required to bind or unbind.")
        events = [e.upper() for e in options["events"] or EVENTS]
        method = "event.unbind" if options["unbind"] else "event.bind"
        failures = 0
        for event in events:
            response = client.call(method, {"event": event, "handler": handler})
            if response.ok:
                self.stdout.write(f"{method} {event} → {_shown(handler)}: ok {_short(response.result)}")
            elif "already bind" in response.error_description.lower():
                self.stdout.write(f"{method} {event} → {_shown(handler)}: already bound")
            else:
                failures += 1
                self.stdout.write(f"{method} {event}: failed {_error(response)}")
        if failures:
            raise CommandError(f"{failures} of {len(events)} calls failed.")

    def _list(self, client) -> None:
        response = client.call("event.get", {})
        if not response.ok:
            raise CommandError(f"event.get failed {_error(response)}")
        rows = response.result if isinstance(response.result, list) else []
        for row in rows:
            row = row if isinstance(row, dict) else {}
            self.stdout.write(f"{row.get('event', '?')} → {_shown(str(row.get('handler', '')))}")
        self.stdout.write(f"{len(rows)} binding(s)")


def _shown(url: str) -> str:
    """Handler URLs may carry ?token=…: print them masked."""
    return mask_text(url, (), json_pairs=False)


def _short(result) -> str:
    return "" if result is True else str(result)[:200]


def _error(response) -> str:
    code = response.error or response.http.error_class or f"HTTP {response.http.status}"
    text = f"{code}: {response.error_description or response.http.error}".strip()
    if code.upper() == "WRONG_AUTH_TYPE" or "application" in text.lower():
        text += f" ({_APP_CONTEXT_HINT})"
    return mask_text(text, (), json_pairs=False)
