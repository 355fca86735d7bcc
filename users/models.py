from django.contrib.auth.models import AbstractUser
from django.db import models

from app.tracking import TracksChanges


class User(TracksChanges, AbstractUser):
    """A customer (non-staff) or a staff member; customers are synced to Bitrix24 as contacts."""

    TRACKED_FIELDS = ("email", "phone", "first_name", "last_name", "is_active")

    email = models.EmailField("email address", unique=True)
    phone = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.email or self.username
