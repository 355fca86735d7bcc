"""Query filters for the order list: status, owner, and a stable ordering."""

import django_filters
from django_filters.constants import EMPTY_VALUES

from orders.models import Order, OrderStatus

ORDERING_FIELDS = ("created_at", "amount", "id")
ORDERING_CHOICES = tuple(f"{prefix}{field}" for field in ORDERING_FIELDS for prefix in ("", "-"))


class StableOrderingFilter(django_filters.OrderingFilter):
    """Like OrderingFilter, with `-pk` as the tie-breaker so pages never repeat or skip rows."""

    def filter(self, qs, value):
        if value in EMPTY_VALUES:
            return qs
        return qs.order_by(*(self.get_ordering_value(param) for param in value), "-pk")


class OrderFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=OrderStatus.choices)
    user = django_filters.NumberFilter(field_name="user_id")
    ordering = StableOrderingFilter(fields=ORDERING_FIELDS)

    class Meta:
        model = Order
        fields = ("status", "user")
