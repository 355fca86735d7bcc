"""A broker that is down (closed port) or hung (accepts TCP, never answers) never holds up an order write: the write
commits and answers, its wake-up is sent off the request path within bounded timeouts, and the sweep delivers once
the broker is back. Real PostgreSQL, a real listener on 127.0.0.1, the real Redis broker of the test settings."""

import json
import threading
import time

import pytest
from django.db import close_old_connections
from rest_framework.test import APIClient

from integrations import outbox, tasks
from integrations.models import IntegrationSync, SyncStatus
from integrations.sandbox.broker import HungBroker, celery_broker, closed_port_url
from integrations.tests.factories import IntegrationFactory
from orders import services as order_services
from orders.models import Order
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

# A hang detector, not a speed target (that is bench/broker.py): without bounded, off-request wake-ups a closed port
# costs ~6 s per write and a hung broker blocks the write for good.
HANG_SECONDS = 3
# How long the background sender may take to give up on one message: the broker's connect/socket timeouts, bounded.
GIVE_UP_SECONDS = 20


@pytest.fixture
def broker_outage(request):
    """The URL of a broker that is down (closed port) or hung (accepts TCP, never answers)."""
    if request.param == "closed":
        yield closed_port_url()
        return
    hung = HungBroker().start()
    yield hung.url()
    hung.stop()


@pytest.fixture
def wakeups(settings, redis_client):
    """Wake-ups on, sent to the test Redis (db flushed); no wake-up of one test is left running into the next."""
    settings.SYNC_WAKEUP_ENABLED = True
    yield redis_client
    assert outbox._wakeups.flush(GIVE_UP_SECONDS)


def finishes_within(seconds: float, write):
    """Run `write` in a thread; fail (instead of hanging the suite) if it does not return in time."""
    result, errors = [], []

    def run():
        try:
            result.append(write())
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
        finally:
            close_old_connections()

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the write was still blocked after {seconds} s"
    if errors:
        raise errors[0]
    return result[0], time.monotonic() - started


def create_through_service(user) -> int:
    return order_services.order_create(user=user, title="during the outage", amount="10.00").pk


def create_through_api(user) -> int:
    client = APIClient()
    client.force_authenticate(user=user)
    response = client.post("/api/orders/", {"title": "during the outage", "amount": "10.00"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def sweep_eagerly() -> list[int]:
    from app.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        return tasks.sweep_due_syncs()
    finally:
        app.conf.task_always_eager = previous


def queued_wakeups(redis_client) -> list[tuple[str, str]]:
    """(task name, args) of the messages waiting in the default queue of the test broker."""
    messages = [json.loads(raw) for raw in redis_client.lrange("celery", 0, -1)]
    return sorted((m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages)


@pytest.mark.parametrize("broker_outage", ["closed", "hung"], indirect=True)
@pytest.mark.parametrize("write", [create_through_service, create_through_api], ids=["service", "api"])
def test_an_order_write_during_a_broker_outage_commits_promptly_and_the_sweep_delivers_it_later(
    broker_outage, write, wakeups, recording_target
):
    user = UserFactory()  # before the integration: only the order's event is recorded
    integration = IntegrationFactory()
    with celery_broker(broker_outage):
        order_id, _ = finishes_within(HANG_SECONDS, lambda: write(user))
        row = IntegrationSync.objects.get(integration=integration, object_id=str(order_id))
        assert Order.objects.filter(pk=order_id).exists() and row.status == SyncStatus.PENDING
        # The wake-up was tried off the request path and given up within the broker's bounded timeouts.
        assert outbox._wakeups.flush(GIVE_UP_SECONDS)
    assert queued_wakeups(wakeups) == []  # the wake-up is lost: only the sweep can deliver the row now
    assert integration.pk in sweep_eagerly()
    row.refresh_from_db()
    assert row.status == SyncStatus.SYNCED
    assert [c["sync"] for c in recording_target.calls] == [row.pk]


@pytest.mark.parametrize("broker_outage", ["closed", "hung"], indirect=True)
def test_wakeups_piled_up_during_an_outage_leave_as_one_message_per_integration_when_it_ends(broker_outage, wakeups):
    user = UserFactory()
    first, second = IntegrationFactory(), IntegrationFactory()
    with celery_broker(broker_outage):
        finishes_within(HANG_SECONDS, lambda: create_through_service(user))
        time.sleep(0.2)  # the sender is now stuck on the outage with the first write's wake-up
        for _ in range(10):
            finishes_within(HANG_SECONDS, lambda: create_through_service(user))
    # The broker is back before the first send gives up: the writes made meanwhile wake each integration once.
    assert outbox._wakeups.flush(GIVE_UP_SECONDS)
    expected = [("integrations.tasks.dispatch_integration", f"[{i.pk}]") for i in (first, second)]
    assert queued_wakeups(wakeups) == sorted(expected)


def test_with_the_broker_up_a_write_wakes_its_integrations_once_each(wakeups):
    user = UserFactory()
    first, second = IntegrationFactory(), IntegrationFactory()
    order_id = create_through_service(user)
    assert outbox._wakeups.flush(GIVE_UP_SECONDS)
    expected = [("integrations.tasks.dispatch_integration", f"[{i.pk}]") for i in (first, second)]
    assert queued_wakeups(wakeups) == sorted(expected)
    assert IntegrationSync.objects.filter(object_id=str(order_id), status=SyncStatus.PENDING).count() == 2
