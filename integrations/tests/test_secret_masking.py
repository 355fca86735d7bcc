"""No endpoint secret in any stored error, log line, admin page or API answer, whatever way a delivery fails.

Each kind (Bitrix24 with its /rest/<user>/<code>/ URL, n8n with its /webhook/<path>?token= URL) is made to fail by
connection refused, read timeout, 4xx, 5xx and a non-JSON answer, from an endpoint that quotes the request URL back in
its error page (n8n's 404 does: `The requested webhook "POST <path>" is not registered.`). Then everything an operator
or a client can see is scanned for the endpoint's secret parts.
"""

import io
import json
import logging
import threading
import time

import pytest
from django.test import Client

from app.logging import RedactSecretsFilter, install_filter
from integrations import dispatcher, targets
from integrations.clients.http import TimeoutSession
from integrations.clients.n8n import N8nClient, generate_secret
from integrations.masking import endpoint_secrets, mask_endpoint, scrub
from integrations.models import Integration, IntegrationKind, IntegrationSync, SyncAttempt
from integrations.sandbox.http import TrackingHandler, TrackingServer
from integrations.targets.n8n import N8nTarget
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

BITRIX_CODE = "q8w7e6r5t4y3u2i1"
N8N_PATH = "9d1c-4e77-hook-path-a1b2"
N8N_TOKEN = "tok-5f6e7d8c9b0a"
SECRETS = [BITRIX_CODE, N8N_PATH, N8N_TOKEN]
FAILURES = ["refused", "timeout", "4xx", "5xx", "bad_json"]


class EchoingEndpoint:
    """Answers every POST as programmed, quoting the full request URL back the way real error pages do."""

    def __init__(self):
        self.mode = "5xx"
        endpoint = self

        class Handler(TrackingHandler):
            def do_POST(self):  # noqa: N802 - http.server naming
                self.rfile.read(int(self.headers.get("content-length") or 0))
                url = f"http://{self.headers.get('host')}{self.path}"
                if endpoint.mode == "timeout":
                    time.sleep(1.5)
                status, body = {
                    "4xx": (404, json.dumps({"code": 404, "message": f'The requested webhook "POST {self.path}"'})),
                    "5xx": (500, f"<html><h1>Internal error</h1><p>while serving {url}</p></html>"),
                }.get(endpoint.mode, (200, f"<html>not json: {url}</html>"))
                raw = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("content-length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *args):
                pass

        self.server = TrackingServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.close_all()
        self.server.server_close()


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def endpoints(port: int) -> dict[str, str]:
    return {
        IntegrationKind.BITRIX24: f"http://127.0.0.1:{port}/rest/1/{BITRIX_CODE}/",
        IntegrationKind.N8N: f"http://127.0.0.1:{port}/webhook/{N8N_PATH}?token={N8N_TOKEN}",
    }


@pytest.fixture
def echoing():
    endpoint = EchoingEndpoint()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def short_n8n_timeout(settings):
    settings.N8N_TIMEOUT = (1.0, 0.5)  # every POST carries it
    targets.target_for(IntegrationKind.N8N)
    previous = targets._registry[IntegrationKind.N8N]
    targets.register(IntegrationKind.N8N, N8nTarget(client=N8nClient(TimeoutSession(1.0, 0.5))))
    yield
    targets.register(IntegrationKind.N8N, previous)


@pytest.fixture
def production_log():
    """The production handler setup (a stream handler with the redact filter) on the root logger, at DEBUG so that
    urllib3's request lines ("POST /webhook/... HTTP/1.1") are in it too."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecretsFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def leaks(where: str, text: str) -> list[str]:
    return [f"{where}: {secret}" for secret in SECRETS if secret in text]


@pytest.mark.django_db
def test_every_failure_of_every_kind_leaves_no_endpoint_secret_anywhere(
    echoing, short_n8n_timeout, production_log, settings, redis_client
):
    settings.BITRIX_TIMEOUT = (1.0, 0.5)
    live, dead = endpoints(echoing.port), endpoints(closed_port())
    bitrix = Integration.objects.create(
        kind=IntegrationKind.BITRIX24, name="bitrix-leak", endpoint=live[IntegrationKind.BITRIX24], rate_limit="50/50"
    )
    n8n = Integration.objects.create(
        kind=IntegrationKind.N8N, name="n8n-leak", endpoint=live[IntegrationKind.N8N], secret=generate_secret()
    )
    for failure in FAILURES:
        source = dead if failure == "refused" else live
        for integration in (bitrix, n8n):
            Integration.objects.filter(pk=integration.pk).update(endpoint=source[integration.kind])
        echoing.mode = failure
        OrderFactory(user=UserFactory())
        dispatcher.drain(max_seconds=20)

    attempts = SyncAttempt.objects.select_related("sync__integration")
    for kind in (IntegrationKind.BITRIX24, IntegrationKind.N8N):
        seen = {a.error_class for a in attempts if a.sync.integration.kind == kind}
        seen |= {a.http_status for a in attempts if a.sync.integration.kind == kind}
        assert {"ConnectionError", "ReadTimeout", 404, 500, 200} <= seen, (kind, seen)

    found: list[str] = []
    for attempt in attempts:
        for field in ("error_message", "response_excerpt", "request_summary"):
            found += leaks(f"attempt {attempt.pk} {field}", getattr(attempt, field))
    for sync in IntegrationSync.objects.all():
        found += leaks(f"sync {sync.pk} last_error", sync.last_error)
    for integration in Integration.objects.all():
        found += leaks(f"{integration.name} disabled_reason", integration.disabled_reason)
    found += leaks("log", production_log.getvalue())

    staff = UserFactory(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    pages = ["/admin/integrations/integration/", "/admin/integrations/integrationsync/",
             "/admin/integrations/dashboard/", "/api/integrations/status/", "/api/integrations/syncs/"]  # fmt: skip
    pages += [f"/admin/integrations/integration/{i.pk}/change/" for i in (bitrix, n8n)]
    pages += [
        f"/admin/integrations/integrationsync/{pk}/change/"
        for pk in IntegrationSync.objects.values_list("pk", flat=True)
    ]
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200, path
        found += leaks(path, response.content.decode())
    assert attempts.count() >= 2 * len(FAILURES)
    assert not found, found


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://portal.example.com/rest/1/abcdef123/", "https://portal.example.com/***"),
        ("https://n8n.example.com/webhook/secret-path?token=t", "https://n8n.example.com/***"),
        ("https://user:pw@n8n.example.com/webhook/x", "https://n8n.example.com/***"),
        ("", ""),
        ("not a url", "***"),
    ],
)
def test_mask_endpoint_keeps_scheme_and_host_only_for_every_kind(url, shown):
    assert mask_endpoint(url) == shown


def test_endpoint_secrets_are_path_segments_query_values_and_user_info_not_structure():
    parts = endpoint_secrets("https://u:p4ss@n8n.example.com/webhook/abc-123-def?token=xyz987&x=1")
    assert {"abc-123-def", "xyz987", "webhook/abc-123-def", "p4ss"} <= set(parts)
    assert "webhook" not in parts and "1" not in parts
    assert "rest" not in endpoint_secrets("https://p.example.com/rest/1/code1234/")


def test_scrub_masks_bare_paths_urls_and_short_parts_only_as_words():
    secrets = endpoint_secrets("http://h:1/webhook/shop")
    text = "HTTPConnectionPool(host='h', port=1): Max retries exceeded with url: /webhook/shop (Caused by x)"
    assert "shop" not in scrub(text, secrets)
    assert scrub("shopping for shop-sync", secrets) == "shopping for shop-sync"
    assert scrub("see http://h:1/any/thing?token=1 now") == "see http://h:1/*** now"


def test_log_filter_masks_arguments_and_tracebacks(production_log):
    log = logging.getLogger("integrations.test")
    log.warning("calling %s", f"https://portal.example.com/rest/1/{BITRIX_CODE}/crm.deal.add.json")
    try:
        raise RuntimeError(f"failed on https://n8n.example.com/webhook/{N8N_PATH}")
    except RuntimeError:
        log.exception("boom")
    text = production_log.getvalue()
    assert "boom" in text and "RuntimeError" in text
    assert not leaks("log", text), text


def test_celery_handlers_get_the_filter_when_celery_sets_up_logging():
    from celery.signals import after_setup_logger, after_setup_task_logger

    import app.celery  # noqa: F401 - connects the signal receivers

    for signal in (after_setup_logger, after_setup_task_logger):
        logger = logging.getLogger(f"celery-like-{signal.name}")
        handler = logging.StreamHandler(io.StringIO())
        logger.addHandler(handler)
        try:
            signal.send(sender=None, logger=logger, loglevel=logging.INFO, logfile=None, format="", colorize=False)
            assert [type(f) for f in handler.filters] == [RedactSecretsFilter]
            install_filter(logger)
            assert [type(f) for f in handler.filters] == [RedactSecretsFilter]  # once, however often it runs
        finally:
            logger.removeHandler(handler)


def test_settings_console_handler_masks(settings):
    assert "redact" in settings.LOGGING["handlers"]["console"]["filters"]
