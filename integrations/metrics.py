"""Prometheus `/metrics`: a collector that reads the database at scrape time, so every process reports the same numbers
(web, workers and beat are separate processes; in-process counters would each see only their own share)."""

import hmac
import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.utils import floatToGoString

from integrations import tally
from integrations.models import Heartbeat, InboundWebhook, Integration, SyncAttempt

log = logging.getLogger("integrations.metrics")
WINDOW = timedelta(hours=1)  # attempts and latency are over recent activity, not the whole retained history
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def _latency_sql() -> str:
    # Bucket bounds are our constants, not input. updated_at narrows through sync_status_updated_idx first.
    columns = ", ".join(f"count(*) FILTER (WHERE lat <= {bound})" for bound in LATENCY_BUCKETS)
    return f"""
        SELECT integration_id, count(*), coalesce(sum(lat), 0), {columns}
        FROM (SELECT integration_id, EXTRACT(EPOCH FROM synced_at - created_at) AS lat
              FROM integrations_integrationsync
              WHERE status = 'synced' AND updated_at >= %s AND synced_at >= %s) AS recent
        GROUP BY integration_id
    """


class SyncCollector:
    """Gauges of the current state; the latency histogram is a gauge histogram over the last hour."""

    def collect(self):
        try:
            families = list(self._families())
            up = 1
        except Exception:  # noqa: BLE001 - a scrape must answer (with db_up 0) when the database is unreachable
            log.warning("metrics: database read failed", exc_info=True)
            connection.close()
            families, up = [], 0
        yield from families
        yield GaugeMetricFamily("integrations_metrics_db_up", "1 when the database answered this scrape.", value=up)

    def _families(self):
        now = timezone.now()
        integrations = {i.pk: i for i in Integration.objects.all()}
        name = {pk: i.name for pk, i in integrations.items()}

        enabled = GaugeMetricFamily(
            "integrations_integration_enabled", "1 if the integration is enabled.", labels=["integration", "kind"]
        )
        for integration in integrations.values():
            enabled.add_metric([integration.name, integration.kind], 1 if integration.enabled else 0)
        yield enabled

        counts, firsts = tally.counts_and_oldest()
        syncs = GaugeMetricFamily(
            "integrations_syncs", "IntegrationSync rows by status.", labels=["integration", "kind", "status"]
        )
        for integration_id, by_status in counts.items():
            integration = integrations.get(integration_id)
            if integration is None:  # created after the integrations were read
                continue
            for status, n in by_status.items():
                syncs.add_metric([integration.name, integration.kind, status], n)
        yield syncs

        oldest = GaugeMetricFamily(
            "integrations_oldest_open_sync_age_seconds",
            "Age of the oldest pending/in-progress/retrying row (0 when none).",
            labels=["integration"],
        )
        for pk, label in name.items():
            first = firsts.get(pk)
            oldest.add_metric([label], (now - first).total_seconds() if first else 0.0)
        yield oldest

        attempts = GaugeMetricFamily(
            "integrations_sync_attempts_last_hour",
            "Delivery attempts started in the last hour by outcome.",
            labels=["integration", "outcome"],
        )
        recent = (
            SyncAttempt.objects.filter(started_at__gte=now - WINDOW)
            .order_by()
            .values("sync__integration_id", "outcome")
            .annotate(n=Count("id"))
        )
        for row in recent:
            attempts.add_metric([name.get(row["sync__integration_id"], "?"), row["outcome"]], row["n"])
        yield attempts

        yield self._latency(name, now)

        inbound = GaugeMetricFamily(
            "integrations_inbound_webhooks", "InboundWebhook rows by status.", labels=["status"]
        )
        for row in InboundWebhook.objects.order_by().values("status").annotate(n=Count("id")):
            inbound.add_metric([row["status"]], row["n"])
        yield inbound

        heartbeats = GaugeMetricFamily(
            "integrations_heartbeat_age_seconds",
            "Seconds since a worker or periodic task last reported.",
            labels=["kind", "name"],
        )
        for beat in Heartbeat.objects.all():
            heartbeats.add_metric([beat.kind, beat.name], (now - beat.seen_at).total_seconds())
        yield heartbeats

    def _latency(self, name: dict[int, str], now) -> GaugeHistogramMetricFamily:
        family = GaugeHistogramMetricFamily(
            "integrations_delivery_latency_seconds",
            "Event row created → synced, for rows synced in the last hour.",
            labels=["integration"],
        )
        since = now - WINDOW
        with connection.cursor() as cursor:
            cursor.execute(_latency_sql(), [since, since])
            for integration_id, total, total_seconds, *cumulative in cursor.fetchall():
                buckets = [
                    (floatToGoString(bound), float(n)) for bound, n in zip(LATENCY_BUCKETS, cumulative, strict=True)
                ]
                buckets.append(("+Inf", float(total)))
                family.add_metric([name.get(integration_id, "?")], buckets, gsum_value=float(total_seconds))
        return family


registry = CollectorRegistry(auto_describe=False)
registry.register(SyncCollector())


NOT_CONFIGURED = (
    "metrics are locked: set METRICS_TOKEN and scrape with `Authorization: Bearer <token>`, "
    "or log in to the admin as staff\n"
)


def metrics_view(request):
    """Prometheus text format, for scrapers sending `Authorization: Bearer <METRICS_TOKEN>` or a staff session.

    Never open: with no token configured and no staff session the answer is 403 saying what to set."""
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    user = getattr(request, "user", None)
    staff = bool(user is not None and user.is_active and user.is_staff)
    if header and token:
        given = header.removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return _refused("wrong metrics token\n", 401)
    elif not staff:
        if token:
            return _refused("send `Authorization: Bearer <METRICS_TOKEN>` or log in to the admin as staff\n", 401)
        return _refused(NOT_CONFIGURED, 403)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _refused(message: str, status: int) -> HttpResponse:
    response = HttpResponse(message, status=status, content_type="text/plain")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response
