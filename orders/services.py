"""Writes for orders. Every write is one transaction; the post_save receiver records the outbox rows inside it."""

from decimal import Decimal

from django.core.exceptions import PermissionDenied, ValidationError
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


# Who may set which status (docs/security.md). Staff: any allowed transition. A customer: only cancel their own
# order, and only before work on it starts; confirming, starting and finishing are the shop's (they move the deal on
# in the CRM, up to won). Changes made in Bitrix24 come in with force=True and no actor.
CUSTOMER_MAY_CANCEL_FROM = (OrderStatus.NEW, OrderStatus.CONFIRMED)
CUSTOMER_REFUSED = (
    "Customers may only cancel an order, and only while it is new or confirmed; other status changes are made by staff."
)


def transition_allowed(current: str, new: str) -> bool:
    return new in TRANSITIONS.get(current, ())


def transitions_for(*, current: str, actor: User | None) -> tuple[str, ...]:
    """The statuses `actor` may move an order in status `current` to (actor None: the system, every allowed one)."""
    allowed = TRANSITIONS.get(current, ())
    if actor is None or actor.is_staff:
        return allowed
    if current not in CUSTOMER_MAY_CANCEL_FROM:
        return ()
    return tuple(s for s in allowed if s == OrderStatus.CANCELLED)


@transaction.atomic
def order_change_status(*, order: Order, status: str, force: bool = False, actor: User | None = None) -> Order:
    """Move the order to `status`; only allowed transitions unless `force` (used for changes made in Bitrix24), and
    only those `actor` may make (PermissionDenied otherwise; None = the system)."""
    order = Order.objects.select_for_update().get(pk=order.pk)
    if status not in OrderStatus.values:
        raise ValidationError({"status": f"Unknown status '{status}'."})
    if status == order.status:
        return order
    if not force and not transition_allowed(order.status, status):
        allowed = ", ".join(transitions_for(current=order.status, actor=actor)) or "none"
        raise ValidationError(
            {"status": f"Cannot change status from '{order.status}' to '{status}' (allowed: {allowed})."}
        )
    if not force and status not in transitions_for(current=order.status, actor=actor):
        raise PermissionDenied(CUSTOMER_REFUSED)
    order.status = status
    order.save()
    return order


@transaction.atomic
def order_delete(*, order: Order) -> None:
    order.delete()
