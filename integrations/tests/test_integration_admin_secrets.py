"""A generated n8n signing secret is shown once, in the answer to the request that made it: not in a Django message
(cookie storage), not in the session, not cached; the admin never shows endpoint or secret back in full."""

import pytest
from django.contrib.sessions.models import Session
from django.test import Client

from integrations.models import Integration, IntegrationKind
from integrations.tests.factories import IntegrationFactory
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db
ADD = "/admin/integrations/integration/add/"
CHANGELIST = "/admin/integrations/integration/"
N8N_URL = "https://n8n.example.com/webhook/4c1d-77aa-secret-path"


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def assert_shown_once_and_kept_nowhere(client: Client, response, secret: str) -> None:
    assert response.status_code == 200
    assert secret in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert all(secret not in morsel.value for morsel in response.cookies.values())
    assert all(secret not in str(s.get_decoded()) for s in Session.objects.all())
    assert secret not in client.get(CHANGELIST).content.decode()


def test_a_generated_secret_is_shown_once_on_a_no_store_page(admin_client):
    form = {"kind": "n8n", "name": "flows", "enabled": "on", "endpoint": N8N_URL, "secret": "", "event_filter": "[]"}

    response = admin_client.post(ADD, form)

    integration = Integration.objects.get(name="flows")
    assert integration.secret.startswith("whsec_")
    assert_shown_once_and_kept_nowhere(admin_client, response, integration.secret)
    assert "messages" not in response.cookies


def test_a_rotated_secret_is_shown_once_on_a_no_store_page(admin_client):
    integration = IntegrationFactory(kind=IntegrationKind.N8N, endpoint=N8N_URL, secret="whsec_" + "A" * 43 + "=")
    old = integration.secret

    response = admin_client.post(
        CHANGELIST, {"action": "rotate_secret", "_selected_action": [integration.pk], "index": 0}
    )

    integration.refresh_from_db()
    assert integration.secret != old and integration.previous_secret == old
    assert_shown_once_and_kept_nowhere(admin_client, response, integration.secret)


def test_the_admin_never_shows_endpoint_or_secret_in_full(admin_client):
    integration = IntegrationFactory(kind=IntegrationKind.N8N, endpoint=N8N_URL, secret="whsec_" + "B" * 43 + "=")
    pages = [CHANGELIST, f"{CHANGELIST}{integration.pk}/change/"]

    for page in pages:
        text = admin_client.get(page).content.decode()
        assert "4c1d-77aa-secret-path" not in text and "B" * 20 not in text, page
