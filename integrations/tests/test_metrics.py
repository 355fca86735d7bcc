"""/metrics: Prometheus text read from the database at scrape time (so every process reports the same numbers)."""

import pytest
from django.test import Client
from django.urls import path
from prometheus_client.parser import text_string_to_metric_families

from integrations import dispatcher
from integrations.metrics import SyncCollector, metrics_view
from integrations.models import Heartbeat, InboundWebhook
from integrations.policy import Verdict
from integrations.tests.factories import IntegrationFactory
from integrations.tests.support import answer
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

urlpatterns = [path("metrics", metrics_view)]
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


@pytest.fixture
def client(client):
    """A staff session: /metrics is never open to anonymous callers."""
    client.force_login(UserFactory(is_staff=True))
    return client


def scrape(client, **headers) -> dict[tuple, float]:
    """{(sample name, sorted label pairs): value}."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }


def value(samples: dict, metric: str, **labels) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


def test_metrics_follow_a_delivery(client, recording_target):
    IntegrationFactory(name="hooks")
    OrderFactory()  # user.created + order.created, both pending
    recording_target.script = [answer(Verdict.RETRYABLE, 503)]  # the first try of the user row fails

    before = scrape(client)
    dispatcher.drain()
    after = scrape(client)

    assert value(before, "integrations_syncs", integration="hooks", kind="n8n", status="pending") == 2
    assert value(before, "integrations_syncs", integration="hooks", kind="n8n", status="synced") is None
    assert value(before, "integrations_oldest_open_sync_age_seconds", integration="hooks") > 0
    assert value(after, "integrations_syncs", integration="hooks", kind="n8n", status="synced") == 1
    assert value(after, "integrations_syncs", integration="hooks", kind="n8n", status="retrying") == 1
    assert value(after, "integrations_sync_attempts_last_hour", integration="hooks", outcome="ok") == 1
    assert value(after, "integrations_sync_attempts_last_hour", integration="hooks", outcome="retryable") == 1
    assert value(after, "integrations_delivery_latency_seconds_gcount", integration="hooks") == 1
    assert value(after, "integrations_delivery_latency_seconds_bucket", integration="hooks", le="+Inf") == 1
    assert value(after, "integrations_delivery_latency_seconds_bucket", integration="hooks", le="3600.0") == 1
    assert value(before, "integrations_delivery_latency_seconds_gcount", integration="hooks") is None
    assert value(after, "integrations_integration_enabled", integration="hooks", kind="n8n") == 1
    assert value(after, "integrations_metrics_db_up") == 1


def test_metrics_show_inbound_by_status_and_heartbeat_ages(client):
    from django.utils import timezone

    InboundWebhook.objects.create(method="POST", path="/bitrix/webhook", status="processed")
    InboundWebhook.objects.create(method="POST", path="/bitrix/webhook", status="rejected")
    InboundWebhook.objects.create(method="POST", path="/bitrix/webhook", status="rejected")
    Heartbeat.objects.create(name="celery@w1", kind="worker", seen_at=timezone.now())

    samples = scrape(client)

    assert value(samples, "integrations_inbound_webhooks", status="rejected") == 2
    assert value(samples, "integrations_inbound_webhooks", status="processed") == 1
    assert 0 <= value(samples, "integrations_heartbeat_age_seconds", kind="worker", name="celery@w1") < 60


def test_a_database_failure_is_reported_as_db_up_zero_not_an_error(client, monkeypatch):
    def broken(self):
        raise RuntimeError("database is down")
        yield  # pragma: no cover - makes this a generator like the real one

    monkeypatch.setattr(SyncCollector, "_families", broken)

    samples = scrape(client)

    assert value(samples, "integrations_metrics_db_up") == 0


def test_metrics_token_when_configured(settings):
    settings.METRICS_TOKEN = "scrape-secret"
    anonymous = Client()

    assert anonymous.get("/metrics").status_code == 401
    assert anonymous.get("/metrics")["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert value(scrape(anonymous, HTTP_AUTHORIZATION="Bearer scrape-secret"), "integrations_metrics_db_up") == 1


def test_metrics_without_a_token_configured_refuse_anonymous_callers_saying_what_to_set(settings):
    settings.METRICS_TOKEN = ""

    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer "}, {"HTTP_AUTHORIZATION": "Bearer anything"}):
        response = Client().get("/metrics", **headers)
        assert response.status_code == 403
        assert b"METRICS_TOKEN" in response.content and b"integrations_" not in response.content


def test_metrics_answer_a_staff_session_but_not_a_customer_session(client, settings):
    settings.METRICS_TOKEN = ""
    customer = Client()
    customer.force_login(UserFactory())

    assert customer.get("/metrics").status_code == 403
    assert value(scrape(client), "integrations_metrics_db_up") == 1
