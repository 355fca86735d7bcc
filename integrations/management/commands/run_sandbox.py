"""run_sandbox: the local Bitrix24 portal and n8n receiver of the embedded run, until SIGINT/SIGTERM.

Env: SANDBOX_BITRIX_PORT (8001), SANDBOX_N8N_PORT (8002), SANDBOX_BITRIX_CODE (webhook code), BITRIX_APPLICATION_TOKEN
(sent with outbound events), N8N_WEBHOOK_SECRET (checked on deliveries), WEB_PORT (our web port: deal/contact changes
are posted to http://127.0.0.1:$WEB_PORT/bitrix/webhook like a real portal's event handlers).
"""

import os
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from integrations.clients.bitrix24 import mask_webhook_url


class Command(BaseCommand):
    help = "Run the Bitrix24 sandbox (with the page at /sandbox/) and the n8n receiver until SIGINT/SIGTERM."
    requires_system_checks: list = []

    def add_arguments(self, parser):
        parser.add_argument("--bitrix-port", type=int, default=int(os.environ.get("SANDBOX_BITRIX_PORT", "8001")))
        parser.add_argument("--n8n-port", type=int, default=int(os.environ.get("SANDBOX_N8N_PORT", "8002")))
        parser.add_argument(
            "--web-port",
            default=os.environ.get("WEB_PORT") or os.environ.get("PORT", ""),
            help="our web port (event handler)",
        )
        parser.add_argument("--no-rate-limit", action="store_true", help="do not enforce the portal's 2/s limit")

    def handle(self, *args, **options):
        from integrations.sandbox.n8n import N8nReceiver
        from integrations.sandbox.page import PagedBitrixSandbox

        code = os.environ.get("SANDBOX_BITRIX_CODE") or None
        web_port = str(options["web_port"] or "").strip()
        handler_url = f"http://127.0.0.1:{web_port}/bitrix/webhook" if web_port else None
        secret = os.environ.get("N8N_WEBHOOK_SECRET") or settings.N8N_WEBHOOK_SECRET or None
        app_token = os.environ.get("BITRIX_APPLICATION_TOKEN") or settings.BITRIX_APPLICATION_TOKEN

        sandbox = PagedBitrixSandbox(
            port=options["bitrix_port"],
            code=code,
            enforce_rate_limit=not options["no_rate_limit"],
            event_handler_url=handler_url,
        )
        if app_token:
            sandbox.application_token = app_token  # before start(): the outbound events' auth block is built there
        try:
            receiver = N8nReceiver(secret=secret, port=options["n8n_port"])
        except ValueError as exc:
            raise CommandError(f"N8N_WEBHOOK_SECRET is not usable: {type(exc).__name__}") from None
        try:
            sandbox.start()
        except OSError as exc:
            raise CommandError(f"Bitrix24 sandbox cannot listen on port {options['bitrix_port']}: {exc}") from None
        try:
            receiver.start()
        except OSError as exc:
            sandbox.stop()
            raise CommandError(f"n8n receiver cannot listen on port {options['n8n_port']}: {exc}") from None
        sandbox.n8n_events_url = f"{receiver.base_url}/sandbox/events"

        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        out = self.stdout
        out.write(f"[sandbox] Bitrix24 webhook: {mask_webhook_url(sandbox.webhook_url)} (code: SANDBOX_BITRIX_CODE)")
        out.write(f"[sandbox] page:            {sandbox.base_url}/sandbox/")
        out.write(f"[sandbox] state (JSON):    {sandbox.base_url}/sandbox/state")
        out.write(f"[sandbox] events → us:     {handler_url or '- (PORT not set)'}")
        out.write(f"[sandbox] n8n webhook:     {receiver.url} (signatures {'checked' if secret else 'not checked'})")
        out.write(f"[sandbox] n8n events:      {receiver.base_url}/sandbox/events")
        self.stdout.flush()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            receiver.stop()
            sandbox.stop()
            out.write("[sandbox] stopped")
