from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from integrations.admin import SyncHistoryInline
from users.models import User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """Django's user admin plus phone; saves go through User.save(), so the outbox signal records the sync."""

    inlines = [SyncHistoryInline]
    list_display = ("email", "name", "phone", "is_staff", "is_active", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active", "groups", "date_joined")
    search_fields = ("email", "username", "first_name", "last_name", "phone")
    ordering = ("-id",)
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name", "email", "phone")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("username", "email", "phone", "first_name", "last_name", "password1", "password2"),
            },
        ),
    )

    @admin.display(description="name", ordering="last_name")
    def name(self, user: User) -> str:
        return user.get_full_name()
