"""n8n events/s to a local N8nReceiver: our outbox + dispatcher vs the django-webhook package (eager Celery task per
event, a new requests.Session per POST). Both end to end: from the first order save to the last event received."""

import time
from decimal import Decimal

from bench.report import Result


def _receiver():
    from integrations.sandbox.n8n import N8nReceiver

    return N8nReceiver().start()  # no secret: it does not verify, so both sides pay the same receiver cost


def _create_orders(user, n: int) -> None:
    from orders import services

    for i in range(n):
        services.order_create(user=user, title=f"n8n {i}", amount=Decimal("5.00"))


def baseline(user, n: int) -> dict:
    from django_webhook.models import Webhook, WebhookTopic

    from bench.django_setup import webhook_signals

    receiver = _receiver()
    webhook_signals(True)
    try:
        hook = Webhook.objects.create(url=receiver.url, active=True)
        hook.topics.set(WebhookTopic.objects.filter(name="orders.Order/create"))
        started = time.perf_counter()
        _create_orders(user, n)
        receiver.wait_for(lambda *a: len(receiver.requests) >= n, timeout=30)
        elapsed = time.perf_counter() - started
        got = len([r for r in receiver.requests if r.accepted])
        return {"events": got, "seconds": elapsed, "rate": got / elapsed}
    finally:
        webhook_signals(False)
        receiver.stop()


def baseline_delivery(user, n: int) -> dict:
    """django-webhook's delivery alone: its task (store a WebhookEvent, POST, mark it) for n payloads built up front."""
    import json

    from django.core.serializers.json import DjangoJSONEncoder
    from django_webhook.models import Webhook
    from django_webhook.signals import model_dict
    from django_webhook.tasks import fire_webhook

    from orders.models import Order

    receiver = _receiver()
    try:
        hook = Webhook.objects.create(url=receiver.url, active=True)
        topic, label = "orders.Order/create", "orders.Order"
        payloads = [
            json.dumps(
                {"object": model_dict(o), "topic": topic, "object_type": label, "webhook_uuid": str(hook.uuid)},
                cls=DjangoJSONEncoder,
            )
            for o in Order.objects.filter(user=user).order_by("-pk")[:n]
        ]
        started = time.perf_counter()
        for payload in payloads:
            fire_webhook.apply(args=[hook.pk, payload], kwargs={"topic": topic, "object_type": label})
        receiver.wait_for(lambda *a: len(receiver.requests) >= len(payloads), timeout=30)
        elapsed = time.perf_counter() - started
        got = len([r for r in receiver.requests if r.accepted])
        return {"events": got, "seconds": elapsed, "rate": got / elapsed}
    finally:
        receiver.stop()


def ours(user, n: int) -> dict:
    from integrations import dispatcher
    from integrations.clients.n8n import generate_secret
    from integrations.models import Integration, IntegrationKind

    receiver = _receiver()
    try:
        Integration.objects.create(
            kind=IntegrationKind.N8N, name="n8n", endpoint=receiver.url, secret=generate_secret()
        )
        started = time.perf_counter()
        _create_orders(user, n)
        written = time.perf_counter() - started
        dispatcher.drain(max_seconds=120)
        elapsed = time.perf_counter() - started
        got = len([r for r in receiver.requests if r.accepted])
        drained = elapsed - written
        return {
            "events": got,
            "seconds": elapsed,
            "rate": got / elapsed,
            "write_seconds": written,
            "delivery_rate": got / drained,
        }
    finally:
        receiver.stop()


def run(ctx) -> list[Result]:
    from bench.django_setup import make_user

    n = ctx.size(60, 1000)
    user = make_user(0, tag="n8n")
    _create_orders(user, 5)  # warm-up
    base = baseline(user, n)
    if not base["events"]:
        raise RuntimeError(f"the django-webhook baseline delivered none of {n} events")
    mine = ours(user, n)
    base_delivery = baseline_delivery(user, n)
    ctx.detail(
        "n8n",
        f"{n} order.created events. django-webhook {_version()} (PyPI, pinned in requirements-dev.txt) runs as-is: "
        "its post_save receiver calls fire_webhook.delay(), executed eagerly (CELERY_TASK_ALWAYS_EAGER), which stores "
        "a WebhookEvent and POSTs with a fresh requests.Session.\n"
        f"- baseline: {base['events']} events in {base['seconds']:.2f} s.\n"
        f"- ours: {mine['events']} events in {mine['seconds']:.2f} s "
        f"(writes {mine['write_seconds']:.2f} s + dispatcher.drain {mine['seconds'] - mine['write_seconds']:.2f} s; "
        "signed Standard Webhooks POST over a pooled session, one SyncAttempt per delivery).\n"
        f"- delivery alone: django-webhook's task run for {base_delivery['events']} prepared payloads took "
        f"{base_delivery['seconds']:.2f} s; our dispatcher drained the {mine['events']} written events in "
        f"{mine['seconds'] - mine['write_seconds']:.2f} s.",
    )
    return [
        Result(
            metric="n8n events/s",
            baseline=base["rate"],
            ours=mine["rate"],
            unit="events/s",
            target="≥ 2×",
            passed=mine["rate"] / base["rate"] >= 2,
            note="end to end (save → received) for both; receiver does not verify signatures for either side.",
        ),
        Result(
            metric="n8n delivery events/s",
            baseline=base_delivery["rate"],
            ours=mine["delivery_rate"],
            unit="events/s",
            target="≥ 2×",
            passed=mine["delivery_rate"] / base_delivery["rate"] >= 2,
            note="delivery alone, the save cost left out on both sides (it is the order save row): "
            "django-webhook's task per prepared payload vs our dispatcher draining written events.",
        ),
    ]


def _version() -> str:
    from importlib.metadata import version

    return version("django-webhook")
