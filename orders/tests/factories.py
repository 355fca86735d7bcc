from decimal import Decimal

import factory

from orders.models import Order
from users.tests.factories import UserFactory


class OrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Order

    user = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Order item {n}")
    quantity = 1
    amount = Decimal("99.50")
    currency = "USD"
