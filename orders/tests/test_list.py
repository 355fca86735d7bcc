from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from orders.models import Order, OrderStatus
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def list_orders(viewer, **query):
    client = APIClient()
    client.force_authenticate(user=viewer)
    response = client.get("/api/orders/", query)
    assert response.status_code == 200, response.content
    return response.json()


def test_list_is_paginated_by_50_newest_first():
    customer = UserFactory()
    OrderFactory.create_batch(55, user=customer)

    first = list_orders(customer)
    second = list_orders(customer, page=2)

    assert first["count"] == 55
    assert len(first["results"]) == 50 and len(second["results"]) == 5
    assert first["next"] and first["previous"] is None
    ids = [o["id"] for o in first["results"] + second["results"]]
    assert ids == sorted(Order.objects.values_list("id", flat=True), reverse=True)


def test_list_filters_by_status():
    customer = UserFactory()
    OrderFactory(user=customer)
    confirmed = OrderFactory(user=customer, status=OrderStatus.CONFIRMED)

    results = list_orders(customer, status="confirmed")["results"]

    assert [o["id"] for o in results] == [confirmed.pk]


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        ("amount", ["cheap", "mid", "dear"]),
        ("-amount", ["dear", "mid", "cheap"]),
        ("created_at", ["mid", "dear", "cheap"]),
        ("-created_at", ["cheap", "dear", "mid"]),
        ("id", ["cheap", "mid", "dear"]),
        ("-id", ["dear", "mid", "cheap"]),
    ],
)
def test_list_orders_by_query_parameter(ordering, expected):
    customer = UserFactory()
    now = timezone.now()
    for title, amount, age_days in [("cheap", "1.00", 0), ("mid", "5.00", 3), ("dear", "9.00", 2)]:
        order = OrderFactory(user=customer, title=title, amount=Decimal(amount))
        Order.objects.filter(pk=order.pk).update(created_at=now - timedelta(days=age_days))

    results = list_orders(customer, ordering=ordering)["results"]

    assert [o["title"] for o in results] == expected


def test_ordering_ties_are_broken_by_newest_id():
    customer = UserFactory()
    orders = OrderFactory.create_batch(3, user=customer, amount=Decimal("2.00"))

    results = list_orders(customer, ordering="amount")["results"]

    assert [o["id"] for o in results] == [o.pk for o in reversed(orders)]


def test_staff_filters_by_user_but_customers_cannot_widen_their_view():
    alice, bob = UserFactory(), UserFactory()
    OrderFactory(user=alice)
    bobs = OrderFactory(user=bob)

    assert [o["id"] for o in list_orders(UserFactory(is_staff=True), user=bob.pk)["results"]] == [bobs.pk]
    assert list_orders(alice, user=bob.pk)["count"] == 0
