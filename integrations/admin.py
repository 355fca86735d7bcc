"""Operators' view: configuration (secrets masked), read-only history with attempts, links, inbound calls."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value
from django.contrib.contenttypes.admin import GenericTabularInline
from django.contrib.contenttypes.models import ContentType
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from integrations import config, selectors, services
from integrations.backfill_admin import backfill_from_admin
from integrations.clients.n8n import generate_secret
from integrations.dashboard import inbound_reason, next_attempt_shown
from integrations.masking import mask_endpoint, mask_secret
from integrations.missed import integration_reenabled
from integrations.models import (
    ExternalLink,
    Heartbeat,
    InboundWebhook,
    Integration,
    IntegrationKind,
    IntegrationSync,
    SyncAttempt,
)


class SecretInput(forms.PasswordInput):
    """Never renders the stored value; leaving it empty keeps the current one."""

    def __init__(self):
        super().__init__(render_value=False, attrs={"placeholder": "unchanged unless you type a new value", "size": 80})


class IntegrationForm(forms.ModelForm):
    endpoint = forms.CharField(widget=SecretInput(), required=False, help_text="Webhook URL (secret, never shown).")
    secret = forms.CharField(widget=SecretInput(), required=False, help_text="whsec_… ; empty = keep / generate.")

    class Meta:
        model = Integration
        fields = ["kind", "name", "enabled", "endpoint", "secret", "event_filter", "rate_limit", "disabled_reason"]

    def clean_endpoint(self):
        # Checked with the other settings by the model's clean() (integrations.config.validate_integration_config).
        return self.cleaned_data.get("endpoint") or (self.instance.endpoint if self.instance.pk else "")

    def clean_secret(self):
        value = self.cleaned_data.get("secret") or (self.instance.secret if self.instance.pk else "")
        self.generated_secret = not value and self.cleaned_data.get("kind") == IntegrationKind.N8N
        return generate_secret() if self.generated_secret else value


@admin.register(Integration)
class IntegrationAdmin(admin.ModelAdmin):
    form = IntegrationForm
    list_display = [
        "name",
        "kind",
        "enabled",
        "masked_endpoint",
        "masked_secret",
        "disabled_reason",
        "paused_until",
        "last_success_at",
    ]
    list_filter = ["kind", "enabled"]
    readonly_fields = [
        "masked_endpoint",
        "masked_secret",
        "paused_until",
        "last_success_at",
        "last_failure_at",
        "consecutive_failures",
    ]
    actions = ["rotate_secret", "backfill"]

    @admin.display(description="endpoint")
    def masked_endpoint(self, obj):
        return mask_endpoint(obj.endpoint)

    @admin.display(description="signing secret")
    def masked_secret(self, obj):
        return mask_secret(obj.secret)

    def save_model(self, request, obj, form, change):
        if getattr(form, "generated_secret", False):
            _remember_new_secret(request, obj)
        super().save_model(request, obj, form, change)
        # The form validated the configuration: a pause set for a configuration error has no reason any more.
        config.integration_config_fixed(integration=obj)
        if change and obj.enabled and "enabled" in form.changed_data:
            messages.info(request, integration_reenabled(integration=obj))

    def response_add(self, request, obj, post_url_continue=None):
        return self._new_secrets_page(request) or super().response_add(request, obj, post_url_continue)

    def response_change(self, request, obj):
        return self._new_secrets_page(request) or super().response_change(request, obj)

    @admin.action(description="Rotate signing secret (old one stays valid for 24 h)")
    def rotate_secret(self, request, queryset):
        for integration in queryset.filter(kind=IntegrationKind.N8N):
            integration.previous_secret = integration.secret
            integration.previous_secret_expires_at = timezone.now() + timezone.timedelta(hours=24)
            integration.secret = generate_secret()
            integration.save()
            _remember_new_secret(request, integration)
        return self._new_secrets_page(request)

    @admin.action(description="Backfill: send existing customers and orders (Bitrix24)", permissions=["change"])
    def backfill(self, request, queryset):
        for integration in queryset:
            level, text = backfill_from_admin(integration=integration)
            messages.add_message(request, level, text)

    def _new_secrets_page(self, request):
        """A new signing secret is shown once, in the answer to the request that made it: never in a message (the
        default storage keeps those in a cookie), never in the session, and the page is not cached."""
        shown = getattr(request, "_new_signing_secrets", None)
        if not shown:
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "New signing secret",
            "secrets": shown,
            "changelist_url": reverse("admin:integrations_integration_changelist"),
        }
        response = TemplateResponse(request, "admin/integrations/integration/new_secret.html", context)
        add_never_cache_headers(response)
        response["Cache-Control"] = "no-store, no-cache, must-revalidate, max-age=0, private"
        response["Pragma"] = "no-cache"
        return response


def _remember_new_secret(request, integration: Integration) -> None:
    shown = getattr(request, "_new_signing_secrets", [])
    request._new_signing_secrets = [*shown, (integration.name, integration.secret)]


class SyncAttemptInline(admin.TabularInline):
    model = SyncAttempt
    extra = 0
    can_delete = False
    fields = [
        "number",
        "started_at",
        "duration_ms",
        "outcome",
        "http_status",
        "error_class",
        "error_message",
        "request_summary",
        "response_excerpt",
        "worker",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


class SyncedModelFilter(admin.RelatedFieldListFilter):
    """Content type filter offering only the models the outbox records (users.User, orders.Order), not every model
    of the project (sessions, permissions…). Same query parameter as Django's, so filtered links keep working."""

    def field_choices(self, field, request, model_admin):
        synced = [ContentType.objects.get_by_natural_key(*key).pk for key in selectors.SYNCED_MODELS.values()]
        return field.get_choices(include_blank=False, limit_choices_to={"pk__in": synced})


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(IntegrationSync)
class IntegrationSyncAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "integration",
        "object_label",
        "event_type",
        "sequence",
        "status",
        "attempts",
        "next_attempt",
        "remote_id",
        "created_at",
        "synced_at",
    ]
    list_filter = ["integration", "status", "event_type", ("content_type", SyncedModelFilter), "created_at"]
    search_fields = ["=object_id", "=event_id", "=remote_id"]
    date_hierarchy = "created_at"
    inlines = [SyncAttemptInline]
    actions = ["retry_now"]
    list_select_related = ["integration", "content_type"]
    # The model's fields in their order, with `next_attempt` shown only where there is one (not on failed/dead rows).
    fields = [
        "integration",
        "content_type",
        "object_id",
        "event_type",
        "event_id",
        "sequence",
        "payload",
        "changes",
        "status",
        "attempts",
        "next_attempt",
        "lease_expires_at",
        "last_error",
        "remote_id",
        "superseded_by",
        "occurred_at",
        "created_at",
        "synced_at",
    ]
    readonly_fields = ["event_id", "next_attempt", "created_at"]

    @admin.display(description="object")
    def object_label(self, obj):
        return f"{obj.content_type.model}:{obj.object_id}"

    @admin.display(description="next attempt at", ordering="next_attempt_at")
    def next_attempt(self, obj):
        # Formatted here: the change page shows a method's raw value ("None", a UTC repr), the list would localize.
        return display_for_value(next_attempt_shown(obj), self.get_empty_value_display())

    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm(services.RETRY_PERMISSION)

    @admin.action(description="Retry now (dead, failed or retrying rows; same event id)", permissions=["retry"])
    def retry_now(self, request, queryset):
        """Through services.sync_retry, with the same stale-state check as the API, the dashboard and sync_retry."""
        retried, refused = 0, []
        for pk in queryset.order_by("id").values_list("pk", flat=True):  # oldest first: an object's rows stay in order
            try:
                services.sync_retry(sync_id=pk)
                retried += 1
            except services.RetryRefused as exc:
                refused.append(f"sync {pk}: {exc}")
        messages.info(request, f"{retried} syncs scheduled now.")
        if refused:
            more = f" (and {len(refused) - 10} more)" if len(refused) > 10 else ""
            messages.warning(request, f"{len(refused)} not retried: " + "; ".join(refused[:10]) + more)


@admin.register(ExternalLink)
class ExternalLinkAdmin(ReadOnlyAdmin):
    list_display = ["integration", "content_type", "object_id", "remote_id", "created_at", "updated_at"]
    list_filter = ["integration", ("content_type", SyncedModelFilter)]
    search_fields = ["=object_id", "=remote_id"]


@admin.register(InboundWebhook)
class InboundWebhookAdmin(ReadOnlyAdmin):
    list_display = ["id", "received_at", "event", "remote_object", "authenticated", "status", "reason", "remote_addr"]
    list_filter = ["status", "event", "authenticated", "received_at"]
    search_fields = ["query", "body", "remote_object", "event"]
    date_hierarchy = "received_at"

    @admin.display(description="reason")
    def reason(self, obj):
        return inbound_reason(obj)


@admin.register(Heartbeat)
class HeartbeatAdmin(ReadOnlyAdmin):
    list_display = ["name", "kind", "seen_at"]
    list_filter = ["kind"]


class SyncHistoryInline(GenericTabularInline):
    """Sync history on the Order and User pages."""

    model = IntegrationSync
    ct_fk_field = "object_id"
    extra = 0
    can_delete = False
    fields = [
        "integration",
        "event_type",
        "sequence",
        "status",
        "attempts",
        "remote_id",
        "last_error",
        "created_at",
        "synced_at",
    ]
    readonly_fields = fields
    ordering = ["-id"]
    max_num = 0

    def has_add_permission(self, request, obj=None):
        return False
