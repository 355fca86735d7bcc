import itertools

import pytest
from rest_framework.test import APIClient

from orders.models import TRANSITIONS, OrderStatus
from orders.services import CUSTOMER_REFUSED
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ALLOWED = [(current, new) for current, targets in TRANSITIONS.items() for new in targets]
DISALLOWED = [
    (current, new) for current, new in itertools.permutations(OrderStatus.values, 2) if new not in TRANSITIONS[current]
]


CUSTOMER_ALLOWED = [("new", "cancelled"), ("confirmed", "cancelled")]
CUSTOMER_REFUSED_MOVES = [move for move in ALLOWED if move not in CUSTOMER_ALLOWED]


def change_status(order, status, user=None):
    client = APIClient()
    client.force_authenticate(user=user or UserFactory(is_staff=True))
    return client.post(f"/api/orders/{order.pk}/status/", {"status": status}, format="json")


@pytest.mark.parametrize(("current", "new"), ALLOWED)
def test_staff_may_make_every_allowed_transition(current, new):
    order = OrderFactory(status=current)

    response = change_status(order, new)

    assert response.status_code == 200, response.content
    assert response.json()["status"] == new
    assert response.json()["allowed_transitions"] == list(TRANSITIONS[new])
    order.refresh_from_db()
    assert order.status == new


@pytest.mark.parametrize(("current", "new"), CUSTOMER_ALLOWED)
def test_customer_may_cancel_own_order_before_work_starts(current, new):
    order = OrderFactory(status=current)

    response = change_status(order, new, user=order.user)

    assert response.status_code == 200, response.content
    order.refresh_from_db()
    assert order.status == new


@pytest.mark.parametrize(("current", "new"), CUSTOMER_REFUSED_MOVES)
def test_customer_may_not_confirm_start_finish_or_cancel_started_order(current, new):
    """Confirming, starting and finishing move the CRM deal on (done = won): only staff may."""
    order = OrderFactory(status=current)

    response = change_status(order, new, user=order.user)

    assert response.status_code == 403
    assert response.json() == {"detail": CUSTOMER_REFUSED}
    order.refresh_from_db()
    assert order.status == current


@pytest.mark.parametrize(
    ("current", "expected"), [("new", ["cancelled"]), ("confirmed", ["cancelled"]), ("in_progress", []), ("done", [])]
)
def test_customer_sees_only_what_they_may_set_in_allowed_transitions(current, expected):
    order = OrderFactory(status=current)
    client = APIClient()
    client.force_authenticate(user=order.user)

    assert client.get(f"/api/orders/{order.pk}/").json()["allowed_transitions"] == expected


def test_customer_refused_transition_writes_no_outbox_row():
    from integrations.models import IntegrationSync
    from integrations.tests.factories import IntegrationFactory

    IntegrationFactory()
    order = OrderFactory()
    before = IntegrationSync.objects.count()

    assert change_status(order, "done", user=order.user).status_code == 400
    assert change_status(order, "confirmed", user=order.user).status_code == 403
    assert IntegrationSync.objects.count() == before


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

    assert response.status_code == 400, response.content
    assert response.json()["status"]
