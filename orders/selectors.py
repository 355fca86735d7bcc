"""Reads for orders. Customers only ever see their own orders; staff see all."""

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from orders.filters import OrderFilter
from orders.models import Order
from users.models import User


def order_visible_to(*, user: User) -> QuerySet[Order]:
    orders = Order.objects.all()
    return orders if user.is_staff else orders.filter(user=user)


def order_list(*, user: User, filters: dict | None = None) -> QuerySet[Order]:
    filterset = OrderFilter(filters or {}, queryset=order_visible_to(user=user))
    if not filterset.is_valid():
        raise ValidationError(filterset.errors)
    return filterset.qs


def order_get(*, user: User, order_id: int) -> Order | None:
    """The order if `user` may see it; None otherwise, so callers answer 404 and do not leak that it exists."""
    return order_visible_to(user=user).filter(pk=order_id).first()
