"""Commit → delivered latency at 50 events/s: one thread creates orders on a fixed 50/s schedule, another runs a
dispatcher loop (wake-ups off, polling); latency = receiver received_at − IntegrationSync.occurred_at."""

import statistics
import threading
import time
from decimal import Decimal

from bench.report import Result, percentile

RATE = 50.0
POLL_SECONDS = 0.005


def run(ctx) -> list[Result]:
    from django.db import connection

    from bench.django_setup import make_user
    from integrations import dispatcher
    from integrations.clients.n8n import generate_secret
    from integrations.models import Integration, IntegrationKind, IntegrationSync
    from integrations.sandbox.n8n import N8nReceiver
    from orders import services

    seconds = ctx.size(3, 20)
    n = int(RATE * seconds)
    user = make_user(0, tag="lat")  # before the integration exists: only order events are measured
    receiver = N8nReceiver().start()
    integration = Integration.objects.create(
        kind=IntegrationKind.N8N, name="n8n-latency", endpoint=receiver.url, secret=generate_secret()
    )
    stop = threading.Event()
    errors: list[BaseException] = []

    def dispatch_loop():
        try:
            while not stop.is_set():
                if not dispatcher.drain(integration_id=integration.pk, max_seconds=1.0):
                    time.sleep(POLL_SECONDS)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    def produce():
        try:
            start = time.perf_counter()
            for i in range(n):
                delay = start + i / RATE - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                services.order_create(user=user, title=f"lat {i}", amount=Decimal("3.00"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    worker = threading.Thread(target=dispatch_loop, name="bench-dispatcher")
    producer = threading.Thread(target=produce, name="bench-producer")
    worker.start()
    producer.start()
    producer.join()
    receiver.wait_for(lambda *a: len(receiver.events) >= n, timeout=30)
    stop.set()
    worker.join(10)
    receiver.stop()
    if errors:
        raise errors[0]
    occurred = {
        str(e): t.timestamp()
        for e, t in IntegrationSync.objects.filter(integration=integration).values_list("event_id", "occurred_at")
    }
    lat = [(ev.received_at - occurred[ev.webhook_id]) * 1000 for ev in receiver.events if ev.webhook_id in occurred]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    ctx.detail(
        "commit → delivered latency",
        f"{n} orders at {RATE:.0f}/s for {seconds} s; dispatcher thread polls every {POLL_SECONDS * 1000:.0f} ms when "
        f"idle (wake-ups off); same process, so producer, dispatcher and receiver share the GIL.\n"
        f"delivered {len(lat)}/{n}; p50 {p50:.1f} ms, p90 {percentile(lat, 90):.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(lat):.1f} ms, mean {statistics.mean(lat):.1f} ms.",
    )
    return [
        Result(
            metric="commit→delivered p50 @50/s",
            ours=p50,
            unit="ms",
            target="≤ 50 ms",
            passed=p50 <= 50,
            note=f"{len(lat)}/{n} delivered; occurred_at is set inside the transaction, before commit.",
        ),
        Result(
            metric="commit→delivered p99 @50/s",
            ours=p99,
            unit="ms",
            target="≤ 250 ms",
            passed=p99 <= 250,
            note=f"max {max(lat):.1f} ms.",
        ),
    ]
