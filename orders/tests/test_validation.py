import pytest
from rest_framework.test import APIClient

from orders.models import Order
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

VALID = {"title": "Chair", "amount": "10.00", "quantity": 1, "currency": "USD"}


@pytest.fixture
def customer_client():
    client = APIClient()
    client.force_authenticate(user=UserFactory())
    return client


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": "-1"}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"amount": "1.234"}, "amount"),
        ({"amount": "1" * 30}, "amount"),
        ({"amount": 1e300}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"amount": "Infinity"}, "amount"),
        ({"amount": None}, "amount"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": -3}, "quantity"),
        ({"quantity": 1.5}, "quantity"),
        ({"quantity": "many"}, "quantity"),
        ({"quantity": 10**20}, "quantity"),
        ({"currency": "US"}, "currency"),
        ({"currency": "U$D"}, "currency"),
        ({"title": ""}, "title"),
        ({"title": "x" * 256}, "title"),
        ({"title": ["a", "b"]}, "title"),
        ({"title": {"nested": 1}}, "title"),
        ({"comment": ["list"]}, "comment"),
        ({"user": 999999}, "user"),
    ],
)
def test_bad_order_fields_are_400_with_field_message(customer_client, changes, field):
    response = customer_client.post("/api/orders/", {**VALID, **changes}, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Order.objects.exists()


def test_missing_required_fields_are_400(customer_client):
    response = customer_client.post("/api/orders/", {}, format="json")

    assert response.status_code == 400
    assert {"title", "amount"} <= set(response.json())


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"",
        b"null",
        b"[1, 2]",
        b'"just a string"',
        b'{"title": "x", "amount": 1e400}',
        b'{"title": "x", "amount": NaN}',
        b'{"title": "x", "amount": "1", "quantity": ' + b"9" * 5000 + b"}",
    ],
)
def test_malformed_json_body_is_400(customer_client, raw):
    response = customer_client.post("/api/orders/", raw, content_type="application/json")

    assert response.status_code == 400


def test_unsupported_content_type_is_415(customer_client):
    response = customer_client.post("/api/orders/", b"title=x", content_type="text/plain")

    assert response.status_code == 415


@pytest.mark.parametrize(
    ("body", "field"),
    [({"amount": "-0.01"}, "amount"), ({"quantity": 0}, "quantity"), ({"currency": "EURO"}, "currency")],
)
def test_bad_update_is_400_and_leaves_order_unchanged(body, field):
    order = OrderFactory()
    client = APIClient()
    client.force_authenticate(user=order.user)

    response = client.patch(f"/api/orders/{order.pk}/", body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert Order.objects.get(pk=order.pk).amount == order.amount


@pytest.mark.parametrize(
    "query", [{"status": "shipped"}, {"ordering": "title"}, {"ordering": "password"}, {"user": "abc"}]
)
def test_bad_list_query_is_400(customer_client, query):
    response = customer_client.get("/api/orders/", query)

    assert response.status_code == 400
    assert set(query) <= set(response.json())
