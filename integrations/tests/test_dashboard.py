"""Admin sync dashboard (integrations/dashboard.py) and the sync history inline on the Order and User pages."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import include, path, reverse
from django.utils import timezone

from app.urls import urlpatterns as project_urlpatterns
from integrations.dashboard import dashboard_urls, format_query
from integrations.models import (
    AttemptOutcome,
    InboundStatus,
    InboundWebhook,
    IntegrationKind,
    IntegrationSync,
    SyncAttempt,
    SyncStatus,
)
from integrations.tests.factories import IntegrationFactory
from orders.models import Order
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

# The project's URLs plus the dashboard mounted as app/urls.py mounts it (before "admin/").
urlpatterns = [path("admin/integrations/dashboard/", include(dashboard_urls)), *project_urlpatterns]
pytestmark = pytest.mark.urls(__name__)

BITRIX_CODE = "s3cr3tc0de9x7q2w"
BITRIX_URL = f"https://portal.example.com/rest/1/{BITRIX_CODE}/"
N8N_URL = "https://n8n.example.com/webhook/7f3c9e2a-hook-token"
N8N_SECRET = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="
DASHBOARD = "/admin/integrations/dashboard/"


@pytest.fixture
def staff(db) -> Client:
    user = UserFactory(is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label__in=["integrations", "orders", "users"], codename__startswith="view_"
        ),
        *Permission.objects.filter(codename__in=["change_order", "change_user"]),
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def operator(db) -> Client:
    """Staff who may also retry: the change permission on integration syncs."""
    user = UserFactory(is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_integrationsync", "change_integrationsync", "view_integration"])
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def n8n(db):
    return IntegrationFactory(kind=IntegrationKind.N8N, name="n8n-main", endpoint=N8N_URL, secret=N8N_SECRET)


@pytest.fixture
def bitrix(db):
    return IntegrationFactory(
        kind=IntegrationKind.BITRIX24,
        name="bitrix-main",
        endpoint=BITRIX_URL,
        enabled=False,
        disabled_reason="portal renewal pending",
    )


def order_rows(order: Order, integration) -> list[IntegrationSync]:
    ct = ContentType.objects.get_for_model(Order)
    return list(IntegrationSync.objects.filter(integration=integration, content_type=ct, object_id=str(order.pk)))


def make_dead(order: Order, integration) -> IntegrationSync:
    sync = order_rows(order, integration)[0]
    IntegrationSync.objects.filter(pk=sync.pk).update(status=SyncStatus.DEAD, attempts=8, last_error="HTTP 503 (x8)")
    sync.refresh_from_db()
    return sync


# Access


def test_anonymous_and_non_staff_are_sent_to_the_login_page(db):
    customer = UserFactory()
    anonymous, logged_in = Client(), Client()
    logged_in.force_login(customer)
    for client in (anonymous, logged_in):
        response = client.get(DASHBOARD)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=/admin/integrations/dashboard/")
        response = client.post(f"{DASHBOARD}retry/1/")
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_staff_without_sync_view_permission_is_forbidden(db):
    client = Client()
    client.force_login(UserFactory(is_staff=True))
    assert client.get(DASHBOARD).status_code == 403


def test_admin_index_links_to_the_dashboard(staff):
    response = staff.get("/admin/")
    assert response.status_code == 200
    assert reverse("sync_dashboard:index") == DASHBOARD
    assert f'href="{DASHBOARD}"' in response.content.decode()
    assert "Sync dashboard" in response.content.decode()


# Content


def test_staff_sees_counts_per_integration_and_disabled_reason(staff, n8n, bitrix):
    orders = [OrderFactory() for _ in range(3)]  # each: user.created + order.created per integration
    make_dead(orders[0], n8n)
    IntegrationSync.objects.filter(pk=order_rows(orders[1], n8n)[0].pk).update(
        created_at=timezone.now() - timedelta(hours=2)
    )

    response = staff.get(DASHBOARD)

    assert response.status_code == 200
    cards = {item["name"]: item for item in response.context["integrations"]}
    assert cards["n8n-main"]["counts"][SyncStatus.PENDING] == 5
    assert cards["n8n-main"]["counts"][SyncStatus.DEAD] == 1
    assert cards["n8n-main"]["enabled"] is True
    assert cards["n8n-main"]["oldest_pending_age"].startswith("2h")
    assert cards["bitrix-main"]["counts"][SyncStatus.SKIPPED] == 6  # disabled: rows recorded as skipped
    html = response.content.decode()
    assert "portal renewal pending" in html
    assert "disabled" in html
    assert 'id="sync-' in html and "HTTP 503 (x8)" in html
    assert html.count('value="Retry"') == 1


def test_chart_counts_deliveries_and_failures_per_hour(staff, n8n):
    order = OrderFactory()
    sync = order_rows(order, n8n)[0]
    now = timezone.now()
    for minutes, outcome in [
        (1, AttemptOutcome.OK),
        (2, AttemptOutcome.OK),
        (3, AttemptOutcome.RETRYABLE),
        (65, AttemptOutcome.TERMINAL),
        (66, AttemptOutcome.DEFERRED),
        (1500, AttemptOutcome.OK),
    ]:
        SyncAttempt.objects.create(sync=sync, number=1, started_at=now - timedelta(minutes=minutes), outcome=outcome)

    chart = staff.get(DASHBOARD).context["integrations"][0]["chart"]

    assert len(chart["bars"]) == 24
    assert (chart["deliveries"], chart["failures"]) == (2, 2)  # 25 h ago is outside; deferred is not a failure
    last, before = chart["bars"][-1], chart["bars"][-2]
    assert last["deliveries"] + before["deliveries"] == 2
    assert sum(b["failures"] for b in chart["bars"][-3:]) == 2
    assert max(b["ok_h"] for b in chart["bars"]) > 0
    html = staff.get(DASHBOARD).content.decode()
    assert "<svg" in html and 'class="fail"' in html


def test_recent_inbound_calls_show_status_event_object_and_verbatim_query(staff):
    InboundWebhook.objects.create(
        method="POST",
        path="/bitrix/webhook",
        query={"test": '"test2"', "token": "***"},
        authenticated=True,
        event="ONCRMDEALUPDATE",
        remote_object="DEAL_123",
        status=InboundStatus.PROCESSED,
    )
    InboundWebhook.objects.create(
        method="POST", path="/bitrix/webhook", status=InboundStatus.REJECTED, error="bad token"
    )

    response = staff.get(DASHBOARD)

    html = response.content.decode()
    assert [c.status for c in response.context["inbound"]] == ["rejected", "processed"]
    assert "test=&quot;test2&quot;&amp;token=***" in html
    assert "ONCRMDEALUPDATE" in html and "DEAL_123" in html and "bad token" in html
    assert format_query({"a": ["1", "2"], "b": ""}) == "a=1&a=2&b="


def test_no_secret_reaches_the_page(staff, n8n, bitrix):
    IntegrationFactory(kind=IntegrationKind.N8N, name="n8n-rotated", endpoint=N8N_URL, previous_secret=N8N_SECRET)
    make_dead(OrderFactory(), n8n)

    html = staff.get(DASHBOARD).content.decode()

    for secret in (BITRIX_CODE, BITRIX_URL, N8N_URL, "7f3c9e2a-hook-token", N8N_SECRET, N8N_SECRET[6:20], "whsec_"):
        assert secret not in html


# Object filter


def test_object_filter_opens_the_changelist_for_that_object(staff, n8n):
    order = OrderFactory()
    ct = ContentType.objects.get_for_model(Order)

    response = staff.get(DASHBOARD, {"object": f" order:{order.pk} "})

    assert response.status_code == 302
    expected = f"/admin/integrations/integrationsync/?q={order.pk}&content_type__id__exact={ct.pk}"
    assert response["Location"] == expected
    changelist = staff.get(expected)
    assert changelist.status_code == 200
    assert {row.object_id for row in changelist.context["cl"].result_list} == {str(order.pk)}
    assert {row.content_type_id for row in changelist.context["cl"].result_list} == {ct.pk}


@pytest.mark.parametrize("text", ["order", "invoice:4", "order:abc", "order:0"])
def test_object_filter_explains_bad_input(staff, text):
    response = staff.get(DASHBOARD, {"object": text}, follow=True)
    assert response.status_code == 200
    assert [m.level_tag for m in response.context["messages"]] == ["error"]


# Retry


def test_retry_button_makes_a_dead_row_pending_again(operator, n8n):
    sync = make_dead(OrderFactory(), n8n)
    page = operator.get(DASHBOARD).content.decode()
    assert f'action="{DASHBOARD}retry/{sync.pk}/"' in page
    assert "csrfmiddlewaretoken" in page

    response = operator.post(f"{DASHBOARD}retry/{sync.pk}/", follow=True)

    assert response.redirect_chain == [(DASHBOARD, 302)]
    sync.refresh_from_db()
    assert (sync.status, sync.attempts, sync.last_error) == (SyncStatus.PENDING, 0, "")
    assert sync.next_attempt_at <= timezone.now()
    assert any("scheduled for delivery now" in str(m) for m in response.context["messages"])
    assert f'id="sync-{sync.pk}"' not in response.content.decode()


def test_retry_needs_the_change_permission_not_just_view(staff, n8n):
    sync = make_dead(OrderFactory(), n8n)
    page = staff.get(DASHBOARD).content.decode()
    assert 'disabled title="needs the change permission on integration syncs"' in page

    response = staff.post(f"{DASHBOARD}retry/{sync.pk}/")

    assert response.status_code == 403
    assert b"integrations.change_integrationsync" in response.content
    sync.refresh_from_db()
    assert sync.status == SyncStatus.DEAD


def test_retry_requires_post_and_a_csrf_token(db, n8n):
    user = UserFactory(is_staff=True, is_superuser=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    sync = make_dead(OrderFactory(), n8n)

    assert client.get(f"{DASHBOARD}retry/{sync.pk}/").status_code == 405
    assert client.post(f"{DASHBOARD}retry/{sync.pk}/").status_code == 403
    sync.refresh_from_db()
    assert sync.status == SyncStatus.DEAD


def test_retry_refuses_to_replay_stale_bitrix_state(operator, db):
    bitrix = IntegrationFactory(kind=IntegrationKind.BITRIX24, name="bx", endpoint=BITRIX_URL)
    order = OrderFactory()
    order.title = "changed"
    order.save()
    first, second = sorted(order_rows(order, bitrix), key=lambda s: s.sequence)
    IntegrationSync.objects.filter(pk=first.pk).update(status=SyncStatus.DEAD)
    IntegrationSync.objects.filter(pk=second.pk).update(status=SyncStatus.SYNCED)

    page = operator.get(DASHBOARD).content.decode()
    assert "use resync" in page

    response = operator.post(f"{DASHBOARD}retry/{first.pk}/", follow=True)

    first.refresh_from_db()
    assert first.status == SyncStatus.DEAD
    assert any("not retried" in str(m) for m in response.context["messages"])


# Sync history inline on the domain admin pages


def test_order_and_user_change_pages_show_the_sync_history_inline(staff, n8n):
    order = OrderFactory()
    make_dead(order, n8n)

    order_page = staff.get(f"/admin/orders/order/{order.pk}/change/")
    user_page = staff.get(f"/admin/users/user/{order.user.pk}/change/")

    assert order_page.status_code == 200 and user_page.status_code == 200
    for page, expected_rows in ((order_page, 1), (user_page, 1)):
        html = page.content.decode()
        assert "integrations-integrationsync-content_type-object_id" in html
        formset = next(f for f in page.context["inline_admin_formsets"] if f.opts.model is IntegrationSync)
        assert len(formset.formset.forms) == expected_rows
        assert "n8n-main" in html
    assert "HTTP 503 (x8)" in order_page.content.decode()
    assert N8N_URL not in order_page.content.decode()


def test_order_with_many_events_lists_newest_first(staff, n8n):
    order = OrderFactory()
    for status in ("confirmed", "in_progress", "done"):
        order.status = status
        order.save()
    response = staff.get(f"/admin/orders/order/{order.pk}/change/")
    formset = next(f for f in response.context["inline_admin_formsets"] if f.opts.model is IntegrationSync)
    sequences = [form.instance.sequence for form in formset.formset.forms]
    assert sequences == sorted(sequences, reverse=True) and len(sequences) == 4
