from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from orders.models import Order, OrderStatus
from orders.tests.factories import OrderFactory
from users.models import User
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

OUTPUT_FIELDS = {
    "id",
    "user",
    "title",
    "quantity",
    "amount",
    "currency",
    "status",
    "comment",
    "created_at",
    "updated_at",
    "allowed_transitions",
}


def api(user: User | None = None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user=user)
    return client


def test_customer_creates_order_for_themselves():
    customer = UserFactory()
    body = {"title": "Desk", "amount": "120.50", "quantity": 2, "currency": "eur", "comment": "asap"}

    response = api(customer).post("/api/orders/", body, format="json")

    assert response.status_code == 201, response.content
    data = response.json()
    assert set(data) == OUTPUT_FIELDS
    assert data["user"] == customer.pk
    assert (data["amount"], data["currency"], data["status"]) == ("120.50", "EUR", "new")
    assert data["allowed_transitions"] == ["cancelled"]  # a customer may only cancel; staff confirm


def test_order_create_applies_defaults():
    response = api(UserFactory()).post("/api/orders/", {"title": "Pen", "amount": 3}, format="json")

    assert response.status_code == 201
    assert (response.json()["quantity"], response.json()["currency"], response.json()["comment"]) == (1, "USD", "")


def test_customer_cannot_create_order_for_another_user():
    other = UserFactory()

    response = api(UserFactory()).post("/api/orders/", {"title": "X", "amount": "1", "user": other.pk}, format="json")

    assert response.status_code == 400
    assert response.json()["user"]
    assert not Order.objects.exists()


def test_staff_creates_order_for_a_customer():
    customer = UserFactory()

    response = api(UserFactory(is_staff=True)).post(
        "/api/orders/", {"title": "X", "amount": "1", "user": customer.pk}, format="json"
    )

    assert response.status_code == 201
    assert Order.objects.get().user == customer


def test_customer_retrieves_updates_own_order_but_status_is_read_only_there():
    order = OrderFactory(title="Old")

    patched = api(order.user).patch(f"/api/orders/{order.pk}/", {"title": "New", "status": "done"}, format="json")
    put = api(order.user).put(f"/api/orders/{order.pk}/", {"title": "Put", "amount": "5.00"}, format="json")
    fetched = api(order.user).get(f"/api/orders/{order.pk}/")

    assert patched.status_code == 200 and patched.json()["title"] == "New"
    assert put.status_code == 200
    assert fetched.json()["title"] == "Put"
    assert fetched.json()["amount"] == "5.00"
    assert fetched.json()["status"] == OrderStatus.NEW


def test_put_requires_title_and_amount():
    order = OrderFactory()

    response = api(order.user).put(f"/api/orders/{order.pk}/", {"comment": "x"}, format="json")

    assert response.status_code == 400
    assert {"title", "amount"} <= set(response.json())


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("get", "", None),
        ("put", "", {"title": "Mine now", "amount": "1.00"}),
        ("patch", "", {"title": "Mine now"}),
        ("post", "status/", {"status": "confirmed"}),
    ],
)
def test_customer_gets_404_for_another_customers_order(method, suffix, body):
    order = OrderFactory(title="Theirs")

    response = getattr(api(UserFactory()), method)(f"/api/orders/{order.pk}/{suffix}", body, format="json")

    assert response.status_code == 404
    order.refresh_from_db()
    assert (order.title, order.status) == ("Theirs", OrderStatus.NEW)


def test_customer_list_contains_only_own_orders():
    mine = OrderFactory()
    OrderFactory()

    response = api(mine.user).get("/api/orders/")

    assert [o["id"] for o in response.json()["results"]] == [mine.pk]


def test_staff_sees_and_changes_any_order():
    order = OrderFactory()
    staff = UserFactory(is_staff=True)

    assert api(staff).get("/api/orders/").json()["count"] == 1
    assert api(staff).patch(f"/api/orders/{order.pk}/", {"amount": "7"}, format="json").status_code == 200
    order.refresh_from_db()
    assert order.amount == Decimal("7")


def test_only_staff_delete_orders():
    order = OrderFactory()

    assert api(order.user).delete(f"/api/orders/{order.pk}/").status_code == 403
    assert api(UserFactory(is_staff=True)).delete(f"/api/orders/{order.pk}/").status_code == 204
    assert not Order.objects.filter(pk=order.pk).exists()


def test_staff_delete_of_missing_order_is_404():
    assert api(UserFactory(is_staff=True)).delete("/api/orders/999999/").status_code == 404


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/orders/"),
        ("post", "/api/orders/"),
        ("get", "/api/orders/{id}/"),
        ("patch", "/api/orders/{id}/"),
        ("delete", "/api/orders/{id}/"),
        ("post", "/api/orders/{id}/status/"),
    ],
)
def test_anonymous_is_401(method, url):
    order = OrderFactory()

    assert getattr(api(), method)(url.format(id=order.pk), {}, format="json").status_code == 401
