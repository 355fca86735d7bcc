"""Operations API filters: an integration by id or name, repeated `status` means either, bad values are clear 400s."""

import pytest
from django.urls import include, path
from rest_framework.test import APIClient

from integrations.models import InboundStatus, InboundWebhook, IntegrationSync, SyncStatus
from integrations.tests.factories import IntegrationFactory
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

urlpatterns = [path("api/integrations/", include("integrations.api_urls"))]
pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]
SYNCS = "/api/integrations/syncs/"
INBOUND = "/api/integrations/inbound/"


@pytest.fixture
def client() -> APIClient:
    client = APIClient()
    client.force_authenticate(user=UserFactory(is_staff=True))
    return client


@pytest.fixture
def rows():
    """Two integrations; for `n8n-default` one order's rows: order.created dead, user.created failed, order.updated
    pending."""
    n8n, other = IntegrationFactory(name="n8n-default"), IntegrationFactory(name="bitrix-main")
    order = OrderFactory()
    order.title = "changed"
    order.save()
    mine = IntegrationSync.objects.filter(integration=n8n)
    mine.filter(content_type__model="order", event_type="created").update(status=SyncStatus.DEAD)
    mine.filter(content_type__model="user").update(status=SyncStatus.FAILED)
    return n8n, other


def listed(client, url, params) -> list[dict]:
    response = client.get(url, params)
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_integration_filter_accepts_a_name_as_well_as_an_id(client, rows):
    n8n, other = rows
    by_name = listed(client, SYNCS, {"integration": "n8n-default"})
    by_id = listed(client, SYNCS, {"integration": n8n.pk})
    assert by_name == by_id and len(by_name) == 3
    assert {r["integration_name"] for r in by_name} == {"n8n-default"}
    assert {r["integration_name"] for r in listed(client, SYNCS, {"integration": "bitrix-main"})} == {"bitrix-main"}


def test_repeated_status_means_either(client, rows):
    found = listed(client, SYNCS, {"status": ["failed", "dead"], "integration": "n8n-default"})
    assert sorted((r["event_name"], r["status"]) for r in found) == [
        ("order.created", "dead"),
        ("user.created", "failed"),
    ]
    assert [r["status"] for r in listed(client, SYNCS, {"status": "dead"})] == ["dead"]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"integration": "n8n-typo"}, "no integration 'n8n-typo'; give an id or a name (bitrix-main, n8n-default)."),
        ({"integration": "999999"}, "no integration '999999'"),
        ({"integration": "99999999999999999999999"}, "no integration '99999999999999999999999'"),
        ({"integration": "0"}, "no integration '0'"),
        ({"status": ["failed", "lost"]}, '"lost" is not a status; use one of: pending, in_progress, synced'),
        ({"status": ""}, '"" is not a status'),
        ({"event": "order.exploded"}, '"order.exploded" is not an event; use one of: created, updated, status_changed'),
    ],
)
def test_unknown_integration_or_status_is_a_400_that_says_what_is_valid(client, rows, params, message):
    response = client.get(SYNCS, params)
    assert response.status_code == 400
    field = next(iter(params))
    assert response.json()[field][0].startswith(message)


def test_inbound_repeated_status_means_either_and_unknown_is_400(client, db):
    for status in (InboundStatus.PROCESSED, InboundStatus.FAILED, InboundStatus.IGNORED):
        InboundWebhook.objects.create(method="POST", path="/bitrix/webhook", status=status)

    found = listed(client, INBOUND, {"status": ["failed", "ignored"]})

    assert sorted(r["status"] for r in found) == ["failed", "ignored"]
    response = client.get(INBOUND, {"status": ["failed", "gone"]})
    assert response.status_code == 400
    assert response.json()["status"][0].startswith('"gone" is not a status; use one of: received, processing')
