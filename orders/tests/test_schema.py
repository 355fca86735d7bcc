import re

import pytest
from django.urls import include, path
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_schema_endpoint_returns_200(client):
    client.force_login(UserFactory())

    response = client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/api/orders/", "/api/orders/{order_id}/status/", "/api/users/me/", "/api/auth/token/"} <= set(paths)


def test_users_and_orders_schema_generates_without_warnings():
    GENERATOR_STATS.reset()
    patterns = [path("api/", include("users.urls")), path("api/", include("orders.urls"))]

    with GENERATOR_STATS.silence():
        schema = SchemaGenerator(patterns=patterns).get_schema(request=None, public=True)

    assert not GENERATOR_STATS, dict(GENERATOR_STATS._warn_cache) | dict(GENERATOR_STATS._error_cache)
    components = schema["components"]["schemas"]
    expected = {"Order", "OrderCreateInput", "OrderUpdateInput", "OrderStatusInput", "PaginatedOrderList", "User"}
    assert expected <= set(components)
    assert "allowed_transitions" in components["Order"]["properties"]
    list_params = {p["name"] for p in schema["paths"]["/api/orders/"]["get"]["parameters"]}
    assert {"status", "ordering", "page"} <= list_params


@pytest.mark.parametrize(
    ("amount", "valid"), [("120.50", True), ("0", True), ("", False), ("-", False), ("-1", False), ("1.234", False)]
)
def test_documented_amount_pattern_matches_what_the_api_accepts(amount, valid):
    schema = SchemaGenerator(patterns=[path("api/", include("orders.urls"))]).get_schema(request=None, public=True)
    pattern = schema["components"]["schemas"]["OrderCreateInput"]["properties"]["amount"]["pattern"]

    client = APIClient()
    client.force_authenticate(user=UserFactory())

    response = client.post("/api/orders/", {"title": "Pen", "amount": amount}, format="json")

    assert (bool(re.search(pattern, amount)), response.status_code) == (valid, 201 if valid else 400)
