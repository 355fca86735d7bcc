"""Writes for orders. Every write is one transaction; the post_save receiver records the outbox rows inside it."""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from orders.models import TRANSITIONS, Order, OrderStatus
from users.models import User

EDITABLE_FIELDS = ("title", "quantity", "amount", "currency", "comment")


@transaction.atomic
def order_create(
    *, user: User, title: str, amount: Decimal, quantity: int = 1, currency: str = "USD", comment: str = ""
) -> Order:
    order = Order(user=user, title=title, amount=amount, quantity=quantity, currency=currency.upper(), comment=comment)
    order.full_clean()
    order.save()
    return order


@transaction.atomic
def order_update(*, order: Order, data: dict) -> Order:
    """Change editable fields (not status: that is order_change_status)."""
    order = Order.objects.select_for_update().get(pk=order.pk)
    for field in EDITABLE_FIELDS:
        if field in data:
            setattr(order, field, data[field].upper() if field == "currency" else data[field])
    order.full_clean()
    order.save()
    return order


def transition_allowed(current: str, new: str) -> bool:
    return new in TRANSITIONS.get(current, ())


@transaction.atomic
def order_change_status(*, order: Order, status: str, force: bool = False) -> Order:
    """Move the order to `status`; only allowed transitions unless `force` (used for changes made in Bitrix24)."""
    order = Order.objects.select_for_update().get(pk=order.pk)
    if status not in OrderStatus.values:
        raise ValidationError({"status": f"Unknown status '{status}'."})
    if status == order.status:
        return order
    if not force and not transition_allowed(order.status, status):
        allowed = ", ".join(TRANSITIONS[order.status]) or "none"
        raise ValidationError(
            {"status": f"Cannot change status from '{order.status}' to '{status}' (allowed: {allowed})."}
        )
    order.status = status
    order.save()
    return order


@transaction.atomic
def order_delete(*, order: Order) -> None:
    order.delete()
