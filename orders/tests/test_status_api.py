import itertools

import pytest
from rest_framework.test import APIClient

from orders.models import TRANSITIONS, OrderStatus
from orders.tests.factories import OrderFactory

pytestmark = pytest.mark.django_db

ALLOWED = [(current, new) for current, targets in TRANSITIONS.items() for new in targets]
DISALLOWED = [
    (current, new) for current, new in itertools.permutations(OrderStatus.values, 2) if new not in TRANSITIONS[current]
]


def change_status(order, status):
    client = APIClient()
    client.force_authenticate(user=order.user)
    return client.post(f"/api/orders/{order.pk}/status/", {"status": status}, format="json")


@pytest.mark.parametrize(("current", "new"), ALLOWED)
def test_allowed_transition_changes_status(current, new):
    order = OrderFactory(status=current)

    response = change_status(order, new)

    assert response.status_code == 200, response.content
    assert response.json()["status"] == new
    assert response.json()["allowed_transitions"] == list(TRANSITIONS[new])
    order.refresh_from_db()
    assert order.status == new


@pytest.mark.parametrize(("current", "new"), DISALLOWED)
def test_disallowed_transition_is_400_with_message(current, new):
    order = OrderFactory(status=current)
    allowed = ", ".join(TRANSITIONS[current]) or "none"

    response = change_status(order, new)

    assert response.status_code == 400
    assert response.json() == {"status": [f"Cannot change status from '{current}' to '{new}' (allowed: {allowed})."]}
    order.refresh_from_db()
    assert order.status == current


def test_new_to_done_message_lists_allowed_statuses():
    response = change_status(OrderFactory(), "done")

    assert response.json() == {"status": ["Cannot change status from 'new' to 'done' (allowed: confirmed, cancelled)."]}


def test_setting_the_current_status_is_a_no_op():
    order = OrderFactory(status=OrderStatus.CONFIRMED)

    assert change_status(order, "confirmed").status_code == 200


@pytest.mark.parametrize("body", [{"status": "shipped"}, {"status": ""}, {}, {"status": ["new"]}])
def test_bad_status_body_is_400(body):
    order = OrderFactory()
    client = APIClient()
    client.force_authenticate(user=order.user)

    response = client.post(f"/api/orders/{order.pk}/status/", body, format="json")

    assert response.status_code == 400
    assert response.json()["status"]
