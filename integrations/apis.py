"""Operations API (staff only): status, sync history with attempts, inbound calls, retry one row."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission, IsAdminUser
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from app.api import paginated_response
from integrations import selectors, services
from integrations.dashboard import next_attempt_shown
from integrations.models import (
    EventType,
    InboundStatus,
    InboundWebhook,
    Integration,
    IntegrationSync,
    SyncAttempt,
    SyncStatus,
)
from integrations.services import RETRY_PERMISSION


class RetryPermission(BasePermission):
    message = f"Retrying a sync needs the '{RETRY_PERMISSION}' permission (admin → Users → permissions)."

    def has_permission(self, request, view) -> bool:
        return request.user.has_perm(RETRY_PERMISSION)


class StaffApi(APIView):
    """Anonymous → 401, authenticated non-staff → 403."""

    permission_classes = [IsAdminUser]
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS


# Status


class RateLimitSerializer(serializers.Serializer):
    tokens = serializers.FloatField(required=False)
    rate = serializers.FloatField(required=False)
    burst = serializers.IntegerField(required=False)
    error = serializers.CharField(required=False)


class CatchupSerializer(serializers.Serializer):
    cursor = serializers.DateTimeField(
        allow_null=True, help_text="Deal changes up to this DATE_MODIFY were read and applied."
    )
    lag_seconds = serializers.FloatField(allow_null=True, help_text="Now minus the cursor.")
    last_run_at = serializers.DateTimeField(allow_null=True)
    last_complete_at = serializers.DateTimeField(allow_null=True, help_text="Last run that read every page.")
    last_outcome = serializers.CharField(help_text="complete, more, no spare capacity, busy or failed: <reason>.")
    last_calls = serializers.IntegerField(required=False, help_text="Portal calls of the last run.")
    last_read = serializers.IntegerField(required=False)
    last_applied = serializers.IntegerField(required=False)
    calls_total = serializers.IntegerField(required=False)
    applied_total = serializers.IntegerField(required=False)


class IntegrationStatusSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField()
    enabled = serializers.BooleanField()
    disabled_reason = serializers.CharField()
    paused_until = serializers.DateTimeField(allow_null=True)
    endpoint = serializers.CharField(help_text="Scheme and host only; the secret part is never shown.")
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Rows by sync status.")
    open = serializers.IntegerField()
    dead = serializers.IntegerField()
    failed = serializers.IntegerField()
    oldest_pending_age_seconds = serializers.FloatField(allow_null=True)
    consecutive_failures = serializers.IntegerField()
    last_success_at = serializers.DateTimeField(allow_null=True)
    last_failure_at = serializers.DateTimeField(allow_null=True)
    rate_limit = RateLimitSerializer(allow_null=True, help_text="Shared Bitrix24 token bucket; null for n8n.")
    catchup = CatchupSerializer(allow_null=True, help_text="Bitrix24 catch-up of lost deal events; null for n8n.")


class WorkerSerializer(serializers.Serializer):
    name = serializers.CharField()
    last_seen_at = serializers.DateTimeField()
    last_seen_age_seconds = serializers.FloatField()
    alive = serializers.BooleanField()
    state = serializers.CharField()
    pid = serializers.IntegerField(allow_null=True)
    concurrency = serializers.IntegerField(allow_null=True)


class BeatTaskSerializer(serializers.Serializer):
    name = serializers.CharField()
    task = serializers.CharField()
    every_seconds = serializers.IntegerField()
    last_run_at = serializers.DateTimeField(allow_null=True)
    age_seconds = serializers.FloatField(allow_null=True)
    overdue = serializers.BooleanField(allow_null=True, help_text="null: never ran yet.")


class BeatSerializer(serializers.Serializer):
    alive = serializers.BooleanField()
    last_seen_age_seconds = serializers.FloatField(allow_null=True)
    tasks = BeatTaskSerializer(many=True)
    note = serializers.CharField(required=False)


class StatusSerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    integrations = IntegrationStatusSerializer(many=True)
    workers = WorkerSerializer(many=True)
    beat = BeatSerializer()
    broker = inline_serializer(
        "BrokerStatus",
        {"reachable": serializers.BooleanField(), "queue_length": serializers.IntegerField(allow_null=True)},
    )
    work = inline_serializer(
        "WorkStatus",
        {
            "idle": serializers.BooleanField(
                help_text="No open sync and no inbound call waiting, processing or to retry."
            ),
            "open_syncs": serializers.IntegerField(),
            "inbound": inline_serializer(
                "InboundWork",
                {
                    "received": serializers.IntegerField(),
                    "processing": serializers.IntegerField(),
                    "retry_waiting": serializers.IntegerField(help_text="Failed retryably; retried after backoff."),
                },
            ),
        },
    )
    settings = inline_serializer(
        "IntegrationFlags",
        {"bitrix_enabled": serializers.BooleanField(), "n8n_enabled": serializers.BooleanField()},
        help_text="Whether an enabled integration of each kind exists (the database, not environment variables).",
    )


class IntegrationStatusApi(StaffApi):
    @extend_schema(responses=StatusSerializer, summary="Sync status: integrations, workers, beat, broker")
    def get(self, request):
        return Response(StatusSerializer(selectors.operations_status()).data)


# Sync history


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = SyncAttempt
        fields = (
            "number",
            "started_at",
            "duration_ms",
            "outcome",
            "http_status",
            "request_summary",
            "response_excerpt",
            "error_class",
            "error_message",
            "worker",
        )


class SyncSerializer(serializers.ModelSerializer):
    integration_name = serializers.CharField(source="integration.name")
    object_type = serializers.CharField()
    event_name = serializers.CharField()
    attempt_rows = AttemptSerializer(many=True, help_text="Every delivery try, oldest first.")
    next_attempt_at = serializers.SerializerMethodField(help_text="Null unless the row is pending or retrying.")

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_next_attempt_at(self, sync: IntegrationSync) -> str | None:
        when = next_attempt_shown(sync)
        return serializers.DateTimeField().to_representation(when) if when else None

    class Meta:
        model = IntegrationSync
        ref_name = "IntegrationSync"
        fields = (
            "id",
            "integration",
            "integration_name",
            "object_type",
            "object_id",
            "event_type",
            "event_name",
            "event_id",
            "sequence",
            "status",
            "attempts",
            "next_attempt_at",
            "last_error",
            "remote_id",
            "superseded_by",
            "occurred_at",
            "created_at",
            "synced_at",
            "updated_at",
            "changes",
            "payload",
            "attempt_rows",
        )


def _validated_object(value: str) -> selectors.ObjectRef:
    try:
        return selectors.parse_object_ref(value)
    except DjangoValidationError as exc:
        raise serializers.ValidationError(exc.messages)


EVENT_NAMES = list(EventType.values) + [f"{t}.{e}" for t in selectors.SYNCED_MODELS for e in EventType.values]


def statuses_filter(choices: type[SyncStatus] | type[InboundStatus]) -> serializers.MultipleChoiceField:
    """`?status=failed&status=dead` means either; an unknown value is a 400 that lists the valid ones."""
    return serializers.MultipleChoiceField(
        choices=choices.choices,
        required=False,
        help_text="Repeat for several: status=failed&status=dead.",
        error_messages={"invalid_choice": f'"{{input}}" is not a status; use one of: {", ".join(choices.values)}.'},
    )


def integration_by_id_or_name(value: str) -> Integration:
    """`2` or `n8n-default` → the Integration; a 400 naming the known integrations otherwise."""
    text = value.strip()
    found = Integration.objects.filter(pk=int(text)) if text.isdigit() else Integration.objects.filter(name=text)
    integration = found.first()
    if integration is None:
        known = ", ".join(Integration.objects.order_by("name").values_list("name", flat=True)) or "none configured"
        raise serializers.ValidationError(f"no integration {value!r}; give an id or a name ({known}).")
    return integration


class SyncListApi(StaffApi):
    class FilterSerializer(serializers.Serializer):
        object = serializers.CharField(required=False, help_text="e.g. order:41 or user:7")
        integration = serializers.CharField(max_length=100, required=False, help_text="id or name, e.g. n8n-default")
        status = statuses_filter(SyncStatus)
        event = serializers.ChoiceField(
            choices=EVENT_NAMES,
            required=False,
            help_text="updated or order.updated",
            error_messages={"invalid_choice": f'"{{input}}" is not an event; use one of: {", ".join(EVENT_NAMES)}.'},
        )
        since = serializers.DateTimeField(required=False, help_text="Rows created at or after (ISO 8601).")

        def validate_object(self, value: str) -> selectors.ObjectRef:
            return _validated_object(value)

        def validate_integration(self, value: str) -> Integration:
            return integration_by_id_or_name(value)

    @extend_schema(parameters=[FilterSerializer], responses=SyncSerializer(many=True), summary="Sync history")
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        integration = data.get("integration")
        rows = selectors.sync_list(
            ref=data.get("object"),
            integration_id=integration.pk if integration else None,
            event=data.get("event"),
            since=data.get("since"),
        )
        if data.get("status"):
            rows = rows.filter(status__in=data["status"])
        return paginated_response(serializer_class=SyncSerializer, queryset=rows, request=request, view=self)


class SyncRetryApi(StaffApi):
    """Staff with the change permission on integration syncs (as in the admin); refused rows answer 409 and say why."""

    permission_classes = [IsAdminUser, RetryPermission]

    @extend_schema(
        request=None,
        responses={
            200: SyncSerializer,
            403: inline_serializer("RetryForbidden", {"detail": serializers.CharField()}),
            409: inline_serializer("RetryRefused", {"detail": serializers.CharField()}),
        },
        summary="Deliver a failed, dead or waiting row now (same event id)",
    )
    def post(self, request, sync_id: int):
        get_object_or_404(IntegrationSync, pk=sync_id)
        try:
            row = services.sync_retry(sync_id=sync_id)
        except services.RetryRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(SyncSerializer(selectors.sync_list().get(pk=row.pk)).data)


# Inbound


class InboundSerializer(serializers.ModelSerializer):
    class Meta:
        model = InboundWebhook
        ref_name = "InboundWebhook"
        fields = (
            "id",
            "received_at",
            "remote_addr",
            "method",
            "path",
            "query",
            "headers",
            "content_type",
            "body",
            "body_truncated",
            "authenticated",
            "event",
            "remote_object",
            "dedupe_key",
            "status",
            "error",
            "result",
            "processed_at",
        )


class InboundListApi(StaffApi):
    class FilterSerializer(serializers.Serializer):
        status = statuses_filter(InboundStatus)
        event = serializers.CharField(max_length=100, required=False, help_text="e.g. ONCRMDEALUPDATE or ROBOT")
        since = serializers.DateTimeField(required=False, help_text="Received at or after (ISO 8601).")

    @extend_schema(parameters=[FilterSerializer], responses=InboundSerializer(many=True), summary="Inbound calls")
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        rows = selectors.inbound_list(event=data.get("event"), since=data.get("since"))
        if data.get("status"):
            rows = rows.filter(status__in=data["status"])
        return paginated_response(serializer_class=InboundSerializer, queryset=rows, request=request, view=self)
