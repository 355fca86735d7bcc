"""n8n end to end: outbox → dispatcher → signed POST over real HTTP → receiver, on PostgreSQL."""

import logging
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from integrations import dispatcher
from integrations.models import IntegrationSync, SyncStatus
from integrations.tests.support import drain_all
from orders import services as order_services
from orders.tests.factories import OrderFactory
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def order_events(receiver, order):
    return [(e.body["type"], e.body["sequence"]) for e in receiver.events_for("order", order.pk)]


def test_status_walk_yields_created_and_three_status_changes_in_order(n8n_receiver, n8n_integration):
    order = OrderFactory()
    for status in ("confirmed", "in_progress", "done"):
        order_services.order_change_status(order=order, status=status)
    dispatcher.drain()
    assert order_events(n8n_receiver, order) == [
        ("order.created", 1),
        ("order.status_changed", 2),
        ("order.status_changed", 3),
        ("order.status_changed", 4),
    ]
    changes = [e.body["changes"] for e in n8n_receiver.events_for("order", order.pk)][1:]
    assert changes == [
        {"status": ["new", "confirmed"]},
        {"status": ["confirmed", "in_progress"]},
        {"status": ["in_progress", "done"]},
    ]
    assert n8n_receiver.duplicates == 0


def test_signatures_verify_with_standardwebhooks_package(n8n_receiver, n8n_integration):
    OrderFactory()
    dispatcher.drain()
    verifier = Webhook(n8n_integration.secret)
    assert n8n_receiver.events
    for event in n8n_receiver.events:
        headers = {k: v for k, v in event.headers.items() if k.startswith("webhook-")}
        assert verifier.verify(event.raw, headers)["id"] == headers["webhook-id"]
    assert all(e.signature_valid for e in n8n_receiver.events)


def test_failing_second_event_still_ends_with_all_events_in_order_same_webhook_id(n8n_receiver, n8n_integration):
    order = OrderFactory()
    n8n_receiver.respond_with(503, times=3, match=lambda b: b.get("type") == "order.status_changed")
    order_services.order_change_status(order=order, status="confirmed")
    order_services.order_change_status(order=order, status="in_progress")
    drain_all()
    assert [t for t, _ in order_events(n8n_receiver, order)] == [
        "order.created",
        "order.status_changed",
        "order.status_changed",
    ]
    second = IntegrationSync.objects.get(object_id=str(order.pk), integration=n8n_integration, sequence=2)
    tries = [r for r in n8n_receiver.requests if r.webhook_id == str(second.event_id)]
    assert len(tries) == 4 and {r.webhook_id for r in tries} == {str(second.event_id)}
    assert second.attempts == 4 and second.status == SyncStatus.SYNCED


def test_gone_410_disables_integration_and_later_events_are_skipped(n8n_receiver, n8n_integration):
    n8n_receiver.respond_with(410)
    order = OrderFactory()
    dispatcher.drain()
    n8n_integration.refresh_from_db()
    assert not n8n_integration.enabled and "410" in n8n_integration.disabled_reason
    order_services.order_update(order=order, data={"title": "after gone"})
    dispatcher.drain()
    latest = IntegrationSync.objects.filter(integration=n8n_integration).order_by("-id").first()
    assert latest.status == SyncStatus.SKIPPED


def test_user_events_are_delivered(n8n_receiver, n8n_integration):
    from users import services as user_services

    user = UserFactory()
    user_services.user_update(user=user, data={"email": "new@example.com"})
    dispatcher.drain()
    events = [(e.body["type"], e.body["changes"]) for e in n8n_receiver.events_for("user", user.pk)]
    assert events[0][0] == "user.created"
    assert events[-1] == ("user.updated", {"email": [user.email, "new@example.com"]})


def test_rotated_secret_sends_two_signatures_both_valid(n8n_receiver, n8n_integration):
    from integrations.clients.n8n import generate_secret

    old = n8n_integration.secret
    n8n_integration.previous_secret = old
    n8n_integration.previous_secret_expires_at = timezone.now() + timedelta(hours=1)
    n8n_integration.secret = generate_secret()
    n8n_integration.save()
    n8n_receiver.set_secret(old)  # the n8n side still has the old secret
    OrderFactory()
    dispatcher.drain()
    assert n8n_receiver.events and all(e.signature_valid for e in n8n_receiver.events)
    assert all(len(e.headers["webhook-signature"].split()) == 2 for e in n8n_receiver.events)


def test_secrets_never_logged(n8n_receiver, n8n_integration, caplog):
    caplog.set_level(logging.DEBUG)
    order = OrderFactory()
    n8n_receiver.respond_with(500, times=1)
    order_services.order_change_status(order=order, status="confirmed")
    drain_all()
    text = caplog.text
    assert n8n_integration.secret not in text
    assert n8n_integration.secret.removeprefix("whsec_") not in text
