from django.contrib import admin

from integrations.admin import SyncHistoryInline
from orders.models import Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    """Saves go through Order.save(), so the outbox signal records the sync (status here is a staff override)."""

    list_display = ("id", "user", "title", "amount", "currency", "status", "created_at")
    list_filter = ("status", "currency", "created_at")
    list_select_related = ("user",)
    search_fields = ("=id", "title", "user__email")
    date_hierarchy = "created_at"
    raw_id_fields = ("user",)
    readonly_fields = ("created_at", "updated_at")
    inlines = [SyncHistoryInline]
    fields = ("user", "title", "quantity", "amount", "currency", "status", "comment", "created_at", "updated_at")
