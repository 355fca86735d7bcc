"""Writes for users. Saving goes through model.save(), whose post_save receiver records the outbox rows."""

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from users.models import User

PROFILE_FIELDS = ("email", "phone", "first_name", "last_name")


@transaction.atomic
def user_create(*, email: str, password: str | None = None, username: str | None = None, **fields) -> User:
    user = User(username=username or email, email=email.strip().lower(), **fields)
    if password:
        try:
            validate_password(password, user=user)  # AUTH_PASSWORD_VALIDATORS; messages never quote the password
        except ValidationError as exc:
            raise ValidationError({"password": exc.messages}) from None
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.full_clean()
    user.save()
    return user


@transaction.atomic
def user_update(*, user: User, data: dict) -> User:
    """Update profile fields; the row is locked so concurrent edits serialise and each produces its own event."""
    user = User.objects.select_for_update().get(pk=user.pk)
    for field in PROFILE_FIELDS:
        if field in data:
            value = data[field]
            setattr(user, field, value.strip().lower() if field == "email" else value)
    user.full_clean(exclude=["password"])
    user.save()
    return user
