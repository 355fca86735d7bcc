"""The sync dashboard end to end in a real headless Chromium (Playwright): log in, filter one order's history, retry
a dead n8n delivery, drain, and see it synced in the changelist.

Needs Debian's chromium at /usr/bin/chromium (Playwright cannot download browsers here); skipped, saying so, without it.
"""

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.contrib.contenttypes.models import ContentType
from django.urls import include, path

from app.urls import urlpatterns as project_urlpatterns
from integrations import dispatcher
from integrations.dashboard import dashboard_urls
from integrations.models import IntegrationSync, SyncStatus
from orders.models import Order
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT_DIR = Path(os.environ.get("DASHBOARD_SCREENSHOT_DIR", "/tmp"))

urlpatterns = [path("admin/integrations/dashboard/", include(dashboard_urls)), *project_urlpatterns]
pytestmark = [pytest.mark.urls(__name__), pytest.mark.slow]


class Browser:
    """One headless Chromium page driven from its own thread: Playwright's sync API runs an asyncio loop in the thread
    that uses it, and Django refuses ORM calls in such a thread. `browser(step)` runs step(page) there and returns."""

    def __init__(self):
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium")
        self._run(self._start)

    def _run(self, fn, *args):
        return self._thread.submit(fn, *args).result(timeout=120)

    def _start(self):
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.page = self._browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.set_default_timeout(15_000)

    def _stop(self):
        try:
            self._browser.close()
        finally:
            self._playwright.stop()

    def __call__(self, step):
        return self._run(step, self.page)

    def close(self):
        try:
            self._run(self._stop)
        finally:
            self._thread.shutdown()


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) to run this test")
    pytest.importorskip("playwright.sync_api")
    driver = Browser()
    yield driver
    driver.close()


def log_in_as_operator(page, login_url: str) -> None:
    """Log in as the `operator` user (factory password) and wait until the sync dashboard is open."""
    page.goto(login_url)
    page.fill("#id_username", "operator")
    page.fill("#id_password", "pass12345")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/integrations/dashboard/$"))


def test_operator_filters_history_retries_a_dead_delivery_and_sees_it_synced(
    transactional_db, live_server, settings, n8n_receiver, n8n_integration, browser
):
    settings.SYNC_MAX_ATTEMPTS = 1
    UserFactory(username="operator", email="operator@example.com", is_staff=True, is_superuser=True)
    other = OrderFactory()
    order = OrderFactory()
    dispatcher.drain(max_seconds=10)  # users and orders created, delivered
    n8n_receiver.respond_with(500, times=1)
    order.status = "confirmed"
    order.save()
    dispatcher.drain(max_seconds=10)  # the status change gets a 500 and, with one attempt allowed, is dead
    dead = IntegrationSync.objects.get(event_type="status_changed", object_id=str(order.pk))
    assert dead.status == SyncStatus.DEAD
    ct = ContentType.objects.get_for_model(Order)
    base = live_server.url

    def log_in_and_open_dashboard(page):
        log_in_as_operator(page, f"{base}/admin/login/?next=/admin/integrations/dashboard/")
        card = page.locator(f"#integration-{n8n_integration.pk}")
        page.screenshot(path=str(SCREENSHOT_DIR / "sync_dashboard.png"), full_page=True)
        return {
            "title": page.locator("#content h1").inner_text(),
            "card": card.inner_text(),
            "bars": card.locator("svg.activity rect.fail").count(),
            "dead_row": page.locator(f"#sync-{dead.pk}").inner_text(),
            "html": page.content(),
        }

    seen = browser(log_in_and_open_dashboard)
    assert seen["title"] == "Sync dashboard"
    assert "n8n-test" in seen["card"] and "enabled" in seen["card"]
    assert seen["bars"] == 24
    assert "dead" in seen["dead_row"] and f"order:{order.pk}" in seen["dead_row"]
    assert n8n_receiver.url not in seen["html"] and n8n_integration.secret not in seen["html"]

    def filter_history_for_the_order(page):
        page.fill("#id_object", f"order:{order.pk}")
        page.click("#object-filter input[type=submit]")
        page.wait_for_url(re.compile(r"/admin/integrations/integrationsync/\?"))
        return page.url, page.locator("#result_list tbody td.field-object_label").all_inner_texts()

    url, objects = browser(filter_history_for_the_order)
    assert f"q={order.pk}" in url and f"content_type__id__exact={ct.pk}" in url
    assert objects and set(objects) == {f"order:{order.pk}"}
    assert f"order:{other.pk}" not in objects

    def retry_the_dead_row(page):
        page.goto(f"{base}/admin/integrations/dashboard/")
        page.click(f"#sync-{dead.pk} input[value=Retry]")
        page.wait_for_url(re.compile(r"/admin/integrations/dashboard/$"))
        return page.locator("ul.messagelist").inner_text(), page.locator(f"#sync-{dead.pk}").count()

    message, rows_left = browser(retry_the_dead_row)
    assert "scheduled for delivery now" in message and rows_left == 0
    dead.refresh_from_db()
    assert dead.status == SyncStatus.PENDING

    # A worker delivers it; the changelist (filtered to the order) now says synced.
    assert dispatcher.drain(max_seconds=10) == 1
    assert [e.body["type"] for e in n8n_receiver.events_for("order", order.pk)] == [
        "order.created",
        "order.status_changed",
    ]

    def status_in_changelist(page):
        page.goto(f"{base}/admin/integrations/integrationsync/?q={order.pk}&content_type__id__exact={ct.pk}")
        row = page.locator("#result_list tbody tr", has=page.locator(f"th.field-id a:text-is('{dead.pk}')"))
        return row.locator("td.field-status").inner_text()

    assert browser(status_in_changelist) == "Synced"


def test_operator_sees_workers_beat_broker_and_oldest_pending_on_the_dashboard(
    transactional_db, live_server, n8n_integration, redis_client, browser
):
    from datetime import timedelta

    from django.utils import timezone

    from integrations.models import Heartbeat, InboundStatus, InboundWebhook

    now = timezone.now()
    UserFactory(username="operator", email="operator@example.com", is_staff=True, is_superuser=True)
    Heartbeat.objects.create(name="celery@worker-1", kind="worker", seen_at=now, info={"concurrency": 2})
    Heartbeat.objects.create(name="celery@worker-0", kind="worker", seen_at=now - timedelta(minutes=20))
    Heartbeat.objects.create(name="beat", kind="beat", seen_at=now - timedelta(seconds=12))
    redis_client.rpush("celery", "queued-message")
    order = OrderFactory()  # not delivered: its rows stay pending
    IntegrationSync.objects.filter(object_id=str(order.pk), content_type__model="order").update(
        created_at=now - timedelta(minutes=7)
    )
    InboundWebhook.objects.create(
        method="POST",
        path="/bitrix/webhook",
        event="ONCRMDEALUPDATE",
        remote_object="DEAL_5",
        status=InboundStatus.IGNORED,
        result={"reason": "no order is linked to deal 5"},
    )
    base = live_server.url

    def read_status_block(page):
        log_in_as_operator(page, f"{base}/admin/login/?next=/")  # `/` sends the operator to the dashboard
        page.screenshot(path=str(SCREENSHOT_DIR / "sync_dashboard_status.png"), full_page=True)
        rows = ["workers", "beat", "broker", "oldest-pending"]
        seen = {name: page.locator(f"#status-{name}").inner_text() for name in rows}
        seen["workers_off"] = page.locator("#status-workers li.worker-silent").inner_text()
        seen["inbound"] = page.locator("#inbound tbody tr").first.inner_text()
        return seen

    seen = browser(read_status_block)
    assert "1 alive, 1 not" in seen["workers"] and "celery@worker-1: alive" in seen["workers"]
    assert "celery@worker-0: silent, last seen 20m" in seen["workers_off"]
    assert "ticking (last seen 1" in seen["beat"]
    assert "reachable, 1 message queued" in seen["broker"]
    assert "7m" in seen["oldest-pending"] and "n8n-test" in seen["oldest-pending"]
    assert "ignored" in seen["inbound"] and "no order is linked to deal 5" in seen["inbound"]
