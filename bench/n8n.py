"""n8n events/s to a local N8nReceiver: our outbox + dispatcher vs the django-webhook package (eager Celery task per
event, a new requests.Session per POST). Both end to end: from the first order save to the last event received."""

import time
from decimal import Decimal

from bench.report import Result


def _receiver():
    from bench.receiver import ReceiverProcess

    return ReceiverProcess()  # its own process, like a real n8n; it does not verify signatures for either side


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
        got = receiver.accepted(n, timeout=30)
        elapsed = time.perf_counter() - started
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
        got = receiver.accepted(len(payloads), timeout=30)
        elapsed = time.perf_counter() - started
        return {"events": got, "seconds": elapsed, "rate": got / elapsed}
    finally:
        receiver.stop()


def ours(user, n: int) -> dict:
    from integrations import dispatcher
    from integrations.clients.n8n import generate_secret
    from integrations.models import Integration, IntegrationKind

    receiver = _receiver()
    try:
        # The same saves with no integration: the difference is what recording the events costs (the outbox rows),
        # our counterpart of django-webhook storing a WebhookEvent inside its task.
        started = time.perf_counter()
        _create_orders(user, n)
        plain = time.perf_counter() - started
        Integration.objects.create(
            kind=IntegrationKind.N8N, name="n8n", endpoint=receiver.url, secret=generate_secret()
        )
        started = time.perf_counter()
        _create_orders(user, n)
        written = time.perf_counter() - started
        dispatcher.drain(max_seconds=120)
        got = receiver.accepted(n, timeout=30)
        elapsed = time.perf_counter() - started
        drained = elapsed - written
        recording = max(written - plain, 0.0)
        return {
            "events": got,
            "seconds": elapsed,
            "rate": got / elapsed,
            "write_seconds": written,
            "plain_seconds": plain,
            "drain_seconds": drained,
            "recording_seconds": recording,
            "delivery_rate": got / (drained + recording),
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
        f"{n} order.created events; the receiver is a process of its own (like n8n), answers 200 and does not verify "
        f"signatures for either side. django-webhook {_version()} (PyPI, pinned in requirements-dev.txt) runs as-is: "
        "its post_save receiver calls fire_webhook.delay(), executed eagerly (CELERY_TASK_ALWAYS_EAGER), which stores "
        "a WebhookEvent and POSTs with a fresh requests.Session.\n"
        f"- delivery, django-webhook: its task for {base_delivery['events']} prepared payloads (store the event, POST, "
        f"mark it) took {base_delivery['seconds']:.2f} s.\n"
        f"- delivery, ours: recording the events {mine['recording_seconds']:.2f} s (the same {n} saves took "
        f"{mine['plain_seconds']:.2f} s with no integration and {mine['write_seconds']:.2f} s with one) + "
        f"dispatcher.drain {mine['drain_seconds']:.2f} s (claim 50, signed Standard Webhooks POSTs over pooled "
        "keep-alive connections, one SyncAttempt per delivery, one UPDATE per batch).\n"
        f"- end to end in one process, save → received, one after the other: django-webhook {base['events']} events "
        f"in {base['seconds']:.2f} s; ours {mine['events']} in {mine['seconds']:.2f} s. Both include the order saves "
        "themselves, the same for both (the order save row); in production our worker delivers while the web process "
        "saves, which this serial run does not show.",
    )
    return [
        Result(
            metric="n8n delivery events/s",
            baseline=base_delivery["rate"],
            ours=mine["delivery_rate"],
            unit="events/s",
            target="≥ 2×",
            passed=mine["delivery_rate"] / base_delivery["rate"] >= 2,
            note="recording + delivering the events: django-webhook's task (stores a WebhookEvent, POSTs, marks it) "
            "per prepared payload vs our outbox rows (save with the integration minus the same save without) + "
            "dispatcher drain.",
        ),
        Result(
            metric="n8n events/s, end to end incl. the order saves",
            baseline=base["rate"],
            ours=mine["rate"],
            unit="events/s",
            target="—",
            passed=None,
            note="save → received for both, serially in one process; shown for context, the save is the same for "
            "both sides and has its own row.",
        ),
    ]


def _version() -> str:
    from importlib.metadata import version

    return version("django-webhook")
