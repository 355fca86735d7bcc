"""An n8n 401/403 tells the operator to check the signing secret, wherever the error is shown (row, attempt,
dashboard), over real HTTP to the n8n sandbox."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from integrations import dispatcher
from integrations.clients.n8n import generate_secret
from integrations.models import IntegrationSync, SyncStatus
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db
HINT = "check the signing secret"


def test_a_signature_refused_by_n8n_says_to_check_the_signing_secret(n8n_receiver, n8n_integration):
    n8n_receiver.set_secret(generate_secret())  # n8n verifies with another secret: it answers 401
    order = OrderFactory()

    dispatcher.drain(max_seconds=10)

    row = IntegrationSync.objects.get(integration=n8n_integration, content_type__model="order")
    assert row.status == SyncStatus.FAILED
    assert row.last_error.startswith(f"HTTP 401: n8n refused the request; {HINT}")
    attempt = row.attempt_rows.get()
    assert attempt.http_status == 401 and HINT in attempt.error_message
    assert n8n_integration.secret not in row.last_error

    operator = UserFactory(is_staff=True)
    operator.user_permissions.add(Permission.objects.get(codename="view_integrationsync"))
    client = Client()
    client.force_login(operator)
    problem = client.get("/admin/integrations/dashboard/").content.decode().split(f'id="sync-{row.pk}"')[1]
    assert HINT in problem.split("</tr>")[0]
    assert f"order:{order.pk}" in problem.split("</tr>")[0]


def test_a_403_from_n8n_says_the_same_and_other_errors_do_not(n8n_receiver, n8n_integration):
    n8n_receiver.respond_with(403, match=lambda body: body.get("type") == "user.created")
    n8n_receiver.respond_with(422, match=lambda body: body.get("type") == "order.created")
    OrderFactory()

    dispatcher.drain(max_seconds=10)

    rows = {r.event_name: r for r in IntegrationSync.objects.filter(integration=n8n_integration)}
    assert rows["user.created"].last_error.startswith(f"HTTP 403: n8n refused the request; {HINT}")
    assert rows["order.created"].last_error.startswith("HTTP 422")
    assert HINT not in rows["order.created"].last_error
