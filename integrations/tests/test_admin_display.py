"""What operators read in the admin and the sync API: rows named by integration name, no "next attempt" on failed or
dead rows, the history filter offering only synced models, and why an inbound call was ignored."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import formats, timezone
from rest_framework.test import APIClient

from integrations.models import InboundStatus, InboundWebhook, IntegrationSync, SyncStatus
from integrations.tests.factories import IntegrationFactory
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/integrations/integrationsync/"


@pytest.fixture
def staff() -> Client:
    user = UserFactory(is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="integrations"))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def order_rows():
    """n8n-default's three rows of one order (user.created, order.created, order.updated), each with a next attempt
    an hour from now: order.created failed, order.updated dead, user.created retrying."""
    n8n = IntegrationFactory(name="n8n-default")
    order = OrderFactory()
    order.title = "changed"
    order.save()
    rows = IntegrationSync.objects.filter(integration=n8n)
    rows.update(next_attempt_at=timezone.now() + timedelta(hours=1))
    rows.filter(content_type__model="order", event_type="created").update(status=SyncStatus.FAILED)
    rows.filter(content_type__model="order", event_type="updated").update(status=SyncStatus.DEAD)
    rows.filter(content_type__model="user").update(status=SyncStatus.RETRYING)
    return {f"{r.event_name}": r for r in rows.select_related("integration", "content_type")}


def test_a_sync_row_is_named_by_its_integration_name(order_rows):
    row = order_rows["order.updated"]
    assert str(row) == f"order.updated #{row.object_id} → n8n-default [dead]"


def test_changelist_and_change_page_show_no_next_attempt_for_failed_and_dead_rows(staff, order_rows):
    page = staff.get(CHANGELIST)
    assert page.status_code == 200
    cells = {row.pk: page.context["cl"].model_admin.next_attempt(row).strip() for row in page.context["cl"].result_list}
    assert cells[order_rows["order.created"].pk] == "-"
    assert cells[order_rows["order.updated"].pk] == "-"
    retrying_at = order_rows["user.created"].next_attempt_at
    assert cells[order_rows["user.created"].pk] == formats.localize(timezone.localtime(retrying_at))
    assert page.content.decode().count('<td class="field-next_attempt">-</td>') == 2

    def next_attempt_on_change_page(row) -> str:
        html = staff.get(f"{CHANGELIST}{row.pk}/change/").content.decode()
        return html.split("Next attempt at:</label>")[1].split("</div>")[0].split('<div class="readonly">')[1]

    assert next_attempt_on_change_page(order_rows["order.updated"]) == "-"
    assert next_attempt_on_change_page(order_rows["order.created"]) == "-"
    assert next_attempt_on_change_page(order_rows["user.created"]) == cells[order_rows["user.created"].pk]
    title = staff.get(f"{CHANGELIST}{order_rows['order.updated'].pk}/change/").content.decode()
    assert f"order.updated #{order_rows['order.updated'].object_id} → n8n-default [dead]" in title


def test_sync_api_gives_no_next_attempt_for_failed_and_dead_rows(order_rows):
    client = APIClient()
    client.force_authenticate(UserFactory(is_staff=True))
    rows = client.get("/api/integrations/syncs/").json()["results"]
    by_event = {r["event_name"]: r for r in rows}
    assert by_event["order.created"]["next_attempt_at"] is None
    assert by_event["order.updated"]["next_attempt_at"] is None
    assert by_event["user.created"]["next_attempt_at"] is not None


@pytest.mark.parametrize("url", [CHANGELIST, "/admin/integrations/externallink/"])
def test_history_content_type_filter_offers_only_synced_models(staff, url):
    page = staff.get(url)
    assert page.status_code == 200
    spec = next(s for s in page.context["cl"].filter_specs if getattr(s, "field_path", "") == "content_type")
    assert sorted(label for _, label in spec.lookup_choices) == ["Orders | order", "Users | user"]
    html = page.content.decode()
    assert "Sessions | session" not in html and "Authentication and Authorization | permission" not in html


def test_inbound_list_says_why_a_call_was_ignored_rejected_or_duplicate(staff):
    def call(**fields):
        return InboundWebhook.objects.create(method="POST", path="/bitrix/webhook", **fields)

    call(status=InboundStatus.IGNORED, result={"reason": "no order is linked to deal 77", "deal_id": "77"})
    call(status=InboundStatus.REJECTED, error="401: Missing or invalid token.")
    call(status=InboundStatus.DUPLICATE, result={"duplicate_of": 5})

    html = staff.get("/admin/integrations/inboundwebhook/").content.decode()

    assert '<td class="field-reason">no order is linked to deal 77</td>' in html
    assert '<td class="field-reason">401: Missing or invalid token.</td>' in html
    assert '<td class="field-reason">duplicate of call 5</td>' in html
