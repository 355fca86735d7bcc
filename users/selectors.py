"""Reads for users."""

from django.db.models import QuerySet

from users.models import User


def user_list(*, filters: dict | None = None) -> QuerySet[User]:
    """All users, optionally narrowed by `search` (part of the e-mail) and `is_staff`."""
    filters = filters or {}
    users = User.objects.order_by("id")
    if filters.get("search"):
        users = users.filter(email__icontains=filters["search"])
    if filters.get("is_staff") is not None:
        users = users.filter(is_staff=filters["is_staff"])
    return users


def user_get(*, user_id: int) -> User | None:
    return User.objects.filter(pk=user_id).first()
