"""Staff sync dashboard in the admin: status per integration, 24 h delivery chart, dead/failed rows with Retry,
recent inbound calls, and an `order:41` box that opens the IntegrationSync changelist for one object.

Mounted by app/urls.py with `path("admin/integrations/dashboard/", include(dashboard_urls))`; every view is wrapped in
`admin.site.admin_view` (staff login, CSRF, never cached). Secrets never reach the page: no endpoint, no signing secret;
inbound queries are stored masked.
"""

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.db.models.functions import TruncHour
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from integrations import selectors, services
from integrations.dashboard_status import format_age, system_status
from integrations.models import (
    DUE_STATUSES,
    AttemptOutcome,
    InboundWebhook,
    Integration,
    IntegrationSync,
    SyncAttempt,
    SyncStatus,
)

VIEW_PERMISSION = "integrations.view_integrationsync"
DEAD_ROWS = 50
INBOUND_ROWS = 20
CHART_HOURS = 24
CHART_HEIGHT = 80  # px of the tallest bar
FAILURE_OUTCOMES = [AttemptOutcome.RETRYABLE, AttemptOutcome.TERMINAL, AttemptOutcome.UNKNOWN]


def _check_permission(request: HttpRequest) -> None:
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied


def changelist_url_for(ref: selectors.ObjectRef) -> str:
    """The IntegrationSync changelist filtered to one object (search is `=object_id`, plus the content type)."""
    query = urlencode({"q": ref.object_id, "content_type__id__exact": ref.content_type.pk})
    return f"{reverse('admin:integrations_integrationsync_changelist')}?{query}"


def format_query(query) -> str:
    """`{"test": '"test2"'}` → `test="test2"` (values verbatim, as stored: already masked by the inbound gate)."""
    if not isinstance(query, dict) or not query:
        return ""
    parts = []
    for key, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            parts.append(f"{key}={item}")
    return "&".join(parts)


def inbound_reason(call: InboundWebhook) -> str:
    """Why a call ended as it did: its error (rejected, failed), the reason it was ignored, or what it duplicates."""
    result = call.result if isinstance(call.result, dict) else {}
    if call.error:
        return call.error
    if result.get("reason"):
        return str(result["reason"])
    if result.get("duplicate_of"):
        return f"duplicate of call {result['duplicate_of']}"
    return ""


def next_attempt_shown(sync: IntegrationSync) -> datetime | None:
    """`next_attempt_at` means something only while a row waits for delivery; a failed or dead row has none."""
    return sync.next_attempt_at if sync.status in DUE_STATUSES else None


def hourly_activity(*, now: datetime, hours: int = CHART_HOURS) -> dict[int, list[dict]]:
    """{integration id: one dict per hour (oldest first): hour, deliveries (ok attempts), failures}."""
    now = now.astimezone(UTC)  # hours are bucketed in UTC (aligned for any zone offset), labelled in local time
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    rows = (
        SyncAttempt.objects.filter(started_at__gte=start, started_at__lt=end)
        .annotate(hour=TruncHour("started_at", tzinfo=UTC))
        .order_by()
        .values("sync__integration_id", "hour")
        .annotate(
            ok=Count("id", filter=Q(outcome=AttemptOutcome.OK)),
            failed=Count("id", filter=Q(outcome__in=FAILURE_OUTCOMES)),
        )
    )
    found: dict[tuple[int, datetime], tuple[int, int]] = {}
    for row in rows:
        found[(row["sync__integration_id"], row["hour"])] = (row["ok"], row["failed"])
    starts = [start + timedelta(hours=i) for i in range(hours)]
    result: dict[int, list[dict]] = {}
    for integration_id in Integration.objects.values_list("id", flat=True):
        series = []
        for hour in starts:
            ok, failed = found.get((integration_id, hour), (0, 0))
            series.append({"hour": hour, "deliveries": ok, "failures": failed})
        result[integration_id] = series
    return result


def chart_bars(series: list[dict], *, height: int = CHART_HEIGHT, bar: int = 12, gap: int = 4) -> dict:
    """Geometry for an inline SVG: per hour a green deliveries bar and a red failures bar side by side."""
    peak = max([1] + [max(h["deliveries"], h["failures"]) for h in series])
    step = 2 * bar + gap
    bars = []
    for index, hour in enumerate(series):
        x = index * step
        ok_h = round(hour["deliveries"] / peak * height)
        fail_h = round(hour["failures"] / peak * height)
        local = timezone.localtime(hour["hour"])
        bars.append(
            {
                "x_ok": x,
                "x_fail": x + bar,
                "ok_h": ok_h,
                "ok_y": height - ok_h,
                "fail_h": fail_h,
                "fail_y": height - fail_h,
                "label": local.strftime("%H:00"),
                "show_label": index % 3 == 0,
                "label_x": x + bar,
                **hour,
            }
        )
    return {
        "bars": bars,
        "bar": bar,
        "width": step * len(series),
        "height": height,
        "total_height": height + 16,
        "label_y": height + 12,
        "peak": peak,
        "deliveries": sum(h["deliveries"] for h in series),
        "failures": sum(h["failures"] for h in series),
    }


@require_GET
def dashboard_view(request: HttpRequest) -> HttpResponse:
    _check_permission(request)
    object_text = request.GET.get("object", "").strip()
    if object_text:
        try:
            ref = selectors.parse_object_ref(object_text)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            return HttpResponseRedirect(changelist_url_for(ref))

    now = timezone.now()
    activity = hourly_activity(now=now)
    integrations = []
    for item in selectors.integration_status_summary(now=now):
        item = {k: v for k, v in item.items() if k != "endpoint"}  # not even the masked host: nothing to leak
        item["oldest_pending_age"] = format_age(item["oldest_pending_age_seconds"])
        item["status_counts"] = [(label, item["counts"].get(value, 0)) for value, label in SyncStatus.choices]
        item["chart"] = chart_bars(activity.get(item["id"], []))
        if item.get("catchup"):
            item["catchup"]["lag"] = format_age(item["catchup"]["lag_seconds"])
        integrations.append(item)

    status = system_status(now=now, integrations=integrations)

    problems = list(
        IntegrationSync.objects.filter(status__in=[SyncStatus.DEAD, SyncStatus.FAILED])
        .select_related("integration", "content_type")
        .order_by("-id")[:DEAD_ROWS]
    )
    for sync in problems:
        sync.object_label = f"{sync.content_type.model}:{sync.object_id}"
        query = urlencode({"q": sync.object_id, "content_type__id__exact": sync.content_type_id})
        sync.history_url = f"{reverse('admin:integrations_integrationsync_changelist')}?{query}"
        sync.stale_reason = selectors.stale_state_retry_reason(sync)

    inbound = list(InboundWebhook.objects.order_by("-id")[:INBOUND_ROWS])
    for call in inbound:
        call.query_text = format_query(call.query)
        call.reason = inbound_reason(call)

    context = {
        **admin.site.each_context(request),
        "title": "Sync dashboard",
        "subtitle": None,
        "generated_at": now,
        "integrations": integrations,
        "status": status,
        "problems": problems,
        "problem_limit": DEAD_ROWS,
        "inbound": inbound,
        "inbound_limit": INBOUND_ROWS,
        "object_text": object_text,
        "can_retry": request.user.has_perm(services.RETRY_PERMISSION),
        "chart_hours": CHART_HOURS,
        "changelist_url": reverse("admin:integrations_integrationsync_changelist"),
        "inbound_changelist_url": reverse("admin:integrations_inboundwebhook_changelist"),
    }
    return TemplateResponse(request, "admin/integrations/dashboard.html", context)


@require_POST
def retry_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Bring one dead/failed row forward to now (same event id), unless that would replay stale state.

    Needs the change permission on integration syncs (viewing the dashboard needs only the view one): 403 otherwise."""
    if not request.user.has_perm(services.RETRY_PERMISSION):
        return HttpResponseForbidden(
            f"Retrying a sync needs the '{services.RETRY_PERMISSION}' permission (ask an admin).\n",
            content_type="text/plain",
        )
    sync = get_object_or_404(IntegrationSync.objects.select_related("integration", "content_type"), pk=pk)
    label = f"sync {sync.pk} ({sync.content_type.model}:{sync.object_id} {sync.event_type} → {sync.integration.name})"
    try:
        services.sync_retry(sync_id=sync.pk)
    except services.RetryRefused as exc:
        messages.error(request, f"{label} not retried: {exc}")
    else:
        messages.success(request, f"{label} scheduled for delivery now.")
    return HttpResponseRedirect(reverse("sync_dashboard:index"))


def _urlpatterns() -> list:
    return [
        path("", admin.site.admin_view(dashboard_view), name="index"),
        path("retry/<int:pk>/", admin.site.admin_view(retry_view), name="retry"),
    ]


# app/urls.py: path("admin/integrations/dashboard/", include(dashboard_urls)),  (before "admin/")
dashboard_urls = (_urlpatterns(), "sync_dashboard")
