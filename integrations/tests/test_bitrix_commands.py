"""bitrix_duplicates, bitrix_check and run_sandbox against the Bitrix24 sandbox."""

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from integrations.clients.bitrix24 import BitrixClient
from integrations.clients.n8n import generate_secret
from integrations.models import ExternalLink, Integration, IntegrationKind
from integrations.tests.support import drain_all
from orders.tests.factories import OrderFactory

pytestmark = pytest.mark.django_db
BASE_DIR = Path(__file__).resolve().parents[2]


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def duplicated(bitrix_sandbox, bitrix_integration):
    """An order synced to a deal, plus one extra deal with the same ORIGIN_ID: (order, linked id, extra id)."""
    order = OrderFactory()
    drain_all()
    linked = ExternalLink.objects.get(content_type__model="order", object_id=str(order.pk)).remote_id
    fields = {"TITLE": f"Order #{order.pk}", "ORIGINATOR_ID": "django-orders", "ORIGIN_ID": str(order.pk)}
    extra = str(BitrixClient(bitrix_sandbox.webhook_url).call("crm.deal.add", {"fields": fields}).result)
    return order, linked, extra


def test_duplicates_dry_run_lists_and_deletes_nothing(bitrix_sandbox, duplicated):
    order, linked, extra = duplicated
    before = set(bitrix_sandbox.deals)
    out, _ = run("bitrix_duplicates")
    assert "ORIGIN_ID" in out and "LINKED" in out
    line = next(line for line in out.splitlines() if line.startswith(str(order.pk) + " "))
    assert f"{linked},{extra}" in line and f"keep {linked}" in line and f"would delete {extra}" in line
    assert "Dry run" in out
    assert set(bitrix_sandbox.deals) == before
    assert bitrix_sandbox.code not in out


def test_duplicates_fix_deletes_only_the_extra(bitrix_sandbox, duplicated):
    order, linked, extra = duplicated
    out, _ = run("bitrix_duplicates", "--order", str(order.pk), "--fix")
    assert "deleted" in out
    assert int(linked) in bitrix_sandbox.deals and int(extra) not in bitrix_sandbox.deals
    out, _ = run("bitrix_duplicates", "--order", str(order.pk))
    assert "no duplicate deals found" in out


def test_duplicates_other_order_filter(bitrix_sandbox, duplicated):
    other = OrderFactory()
    drain_all()
    out, _ = run("bitrix_duplicates", "--order", str(other.pk), "--fix")
    assert "no duplicate deals found" in out
    assert len(bitrix_sandbox.deals) == 3


def test_check_good_credentials(bitrix_sandbox, bitrix_integration):
    out, err = run("bitrix_check")
    assert "profile" in out and "crm.deal.fields" in out and out.rstrip().endswith("OK")
    assert "127.0.0.1:" in out and "/***" in out and "stage map" in out and "django-orders" in out
    assert bitrix_sandbox.code not in out + err


def test_check_bad_credentials_fails_clearly_without_the_code(bitrix_sandbox, bitrix_integration):
    bad_code = "wrongcode1234567"
    bitrix_integration.endpoint = f"{bitrix_sandbox.base_url}/rest/1/{bad_code}/"
    bitrix_integration.save()
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("bitrix_check", stdout=out, stderr=err)
    message = str(excinfo.value)
    assert "credentials rejected (INVALID_CREDENTIALS)" in message
    assert "credentials rejected (INVALID_CREDENTIALS)" in err.getvalue()
    everything = out.getvalue() + err.getvalue() + message
    assert bad_code not in everything and bitrix_sandbox.code not in everything


def test_check_unreachable_portal_fails(bitrix_integration, bitrix_sandbox):
    code = "unreachable12345"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    Integration.objects.filter(pk=bitrix_integration.pk).update(endpoint=f"http://127.0.0.1:{port}/rest/1/{code}/")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("bitrix_check", stdout=out, stderr=err)
    assert "failed" in str(excinfo.value)
    assert code not in out.getvalue() + err.getvalue() + str(excinfo.value)


def test_check_without_any_configuration(settings):
    settings.BITRIX_WEBHOOK_URL = ""
    assert not Integration.objects.filter(kind=IntegrationKind.BITRIX24).exists()
    with pytest.raises(CommandError, match="No bitrix24 integration"):
        run("bitrix_check")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, deadline: float, proc: subprocess.Popen) -> requests.Response:
    while True:
        try:
            return requests.get(url, timeout=1)
        except requests.ConnectionError:
            if proc.poll() is not None:
                pytest.fail(f"run_sandbox exited with {proc.returncode}: {proc.stdout.read()}")
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_run_sandbox_serves_the_page_and_stops_on_sigterm():
    bitrix_port, n8n_port, web_port = _free_port(), _free_port(), _free_port()
    code = "sandboxcode98765"
    env = {
        **os.environ,
        "SANDBOX_BITRIX_PORT": str(bitrix_port),
        "SANDBOX_N8N_PORT": str(n8n_port),
        "SANDBOX_BITRIX_CODE": code,
        "BITRIX_APPLICATION_TOKEN": "apptoken-for-test",
        "N8N_WEBHOOK_SECRET": generate_secret(),
        "PORT": str(web_port),
        "PYTHONUNBUFFERED": "1",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "test-only-run-sandbox",  # a DATABASE_URL run requires one
        "FIELD_ENCRYPTION_KEYS": ",".join(django_settings.FIELD_ENCRYPTION_KEYS),  # and the secrets at rest
    }
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_sandbox"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        page = _get(f"http://127.0.0.1:{bitrix_port}/sandbox/", deadline, proc)
        while page.status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
            page = _get(f"http://127.0.0.1:{bitrix_port}/sandbox/", deadline, proc)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "Deals" in page.text and f"127.0.0.1:{n8n_port}/sandbox/events" in page.text
        assert code not in page.text
        assert requests.get(f"http://127.0.0.1:{bitrix_port}/sandbox/state", timeout=2).json()["deals"] == []
        assert requests.get(f"http://127.0.0.1:{n8n_port}/sandbox/events", timeout=2).json()["events"] == []
        rest = BitrixClient(f"http://127.0.0.1:{bitrix_port}/rest/1/{code}/").call("profile")
        assert rest.ok
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert f"127.0.0.1:{bitrix_port}/***" in output and "/sandbox/" in output
    assert f"http://127.0.0.1:{web_port}/bitrix/webhook" in output
    assert code not in output and "apptoken-for-test" not in output
