"""`/` and the admin's "View site" lead somewhere useful instead of a 404 (app/urls.py)."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from users.tests.factories import UserFactory

DASHBOARD = "/admin/integrations/dashboard/"
API_DOCS = "/api/docs/"


def client_for(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.django_db
def test_root_sends_operators_to_the_dashboard_and_everyone_else_to_the_api_docs():
    operator = UserFactory(is_staff=True)
    operator.user_permissions.add(Permission.objects.get(codename="view_integrationsync"))
    cases = [
        (client_for(), API_DOCS),
        (client_for(UserFactory()), API_DOCS),  # a customer
        (client_for(UserFactory(is_staff=True)), "/admin/"),  # staff who may not see the dashboard
        (client_for(operator), DASHBOARD),
        (client_for(UserFactory(is_staff=True, is_superuser=True)), DASHBOARD),
    ]
    for client, expected in cases:
        response = client.get("/")
        assert (response.status_code, response["Location"]) == (302, expected)
        assert client.get(expected).status_code == 200


@pytest.mark.django_db
def test_admin_view_site_link_points_at_the_api_docs():
    admin_page = client_for(UserFactory(is_staff=True, is_superuser=True)).get("/admin/")
    assert admin_page.status_code == 200
    assert f'href="{API_DOCS}">View site' in admin_page.content.decode()
