from unittest import mock

import pytest

from orders.models import Order, OrderStatus
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

# The read-only sync history inline is a formset: a browser always posts its management form.
PREFIX = "integrations-integrationsync-content_type-object_id"
SYNC_HISTORY_INLINE_MANAGEMENT = {f"{PREFIX}-TOTAL_FORMS": "0", f"{PREFIX}-INITIAL_FORMS": "0"}


@pytest.fixture
def superuser_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?q=Order",
        "?q=abc",
        "?q=customer0%40example.com",
        "?status__exact=new",
        "?currency=USD",
        "?created_at__gte=2020-01-01+00%3A00%3A00%2B00%3A00",
        "?o=-4",
    ],
)
def test_order_changelist_renders_with_search_and_filters(superuser_client, query):
    OrderFactory.create_batch(3)

    assert superuser_client.get(f"/admin/orders/order/{query}").status_code == 200


def test_order_changelist_finds_order_by_id(superuser_client):
    order = OrderFactory(title="Needle")
    OrderFactory(title="Hay")

    response = superuser_client.get(f"/admin/orders/order/?q={order.pk}")

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [order]


def test_order_changelist_date_hierarchy_drilldown_renders(superuser_client):
    order = OrderFactory()
    created = order.created_at

    response = superuser_client.get(
        f"/admin/orders/order/?created_at__year={created.year}&created_at__month={created.month}"
    )

    assert response.status_code == 200


def test_order_change_and_add_pages_render(superuser_client):
    order = OrderFactory()

    assert superuser_client.get(f"/admin/orders/order/{order.pk}/change/").status_code == 200
    assert superuser_client.get("/admin/orders/order/add/").status_code == 200


def test_order_admin_save_goes_through_model_save(superuser_client):
    order = OrderFactory()
    with mock.patch.object(Order, "save", autospec=True, side_effect=Order.save) as save:
        response = superuser_client.post(
            f"/admin/orders/order/{order.pk}/change/",
            {
                "user": order.user_id,
                "title": "Edited in admin",
                "quantity": 3,
                "amount": "12.00",
                "currency": "EUR",
                "status": OrderStatus.CONFIRMED,
                "comment": "",
                **SYNC_HISTORY_INLINE_MANAGEMENT,
            },
        )

    assert response.status_code == 302, response.content
    order.refresh_from_db()
    assert (order.title, order.quantity, order.status) == ("Edited in admin", 3, OrderStatus.CONFIRMED)
    assert [call.args[0].pk for call in save.call_args_list] == [order.pk]
