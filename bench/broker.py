"""Order write latency with wake-ups on and the Celery broker up (Redis), down (a closed port) or hung (a local TCP
server that accepts and never answers): p99 of order_create (commit and on_commit included), interleaved rounds."""

import time
from decimal import Decimal

from bench.report import Result, percentile

MODES = ("up", "down", "hung")


def _writes(user, n: int) -> list[float]:
    from orders import services

    times = []
    for i in range(n):
        started = time.perf_counter()
        services.order_create(user=user, title=f"broker {i}", amount=Decimal("5.00"))
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def run(ctx) -> list[Result]:
    from django.test import override_settings

    from app.celery import app
    from bench.django_setup import REDIS_URL, make_user
    from integrations import outbox
    from integrations.models import Integration, IntegrationKind
    from integrations.sandbox.broker import HungBroker, celery_broker, closed_port_url

    n = ctx.size(30, 200)
    rounds = ctx.size(1, 3)
    user = make_user(0, tag="broker")  # before the integrations: only order events are measured
    Integration.objects.create(
        kind=IntegrationKind.N8N, name="n8n", endpoint="http://127.0.0.1:9/none", secret="whsec_" + "A" * 32
    )
    Integration.objects.create(
        kind=IntegrationKind.BITRIX24, name="bitrix", endpoint="http://127.0.0.1:9/rest/1/x/", rate_limit="2/50"
    )
    hung = HungBroker().start()
    urls = {"up": REDIS_URL, "down": closed_port_url(), "hung": hung.url()}
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False  # the bench settings run tasks inline; here they go to the broker
    try:
        with override_settings(SYNC_WAKEUP_ENABLED=True):
            _writes(user, 10)  # warm-up: connections, code paths, the sender thread
            outbox._wakeups.flush(10)
            for _ in range(rounds):  # interleaved so drift hits every mode alike
                for mode in MODES:
                    with celery_broker(urls[mode]):
                        samples[mode] += _writes(user, n)
                    # A send stuck on an outage runs out its bounded timeouts before the broker-up phase (and before
                    # the next metric); from down to hung it may stay stuck, as it would in an outage anyway.
                    if mode != "down":
                        outbox._wakeups.flush(15)
    finally:
        app.conf.task_always_eager = eager
        hung.stop()
    import redis

    messages = redis.Redis.from_url(REDIS_URL).llen("celery")  # no worker runs: every wake-up sent is still there
    p99 = {mode: percentile(samples[mode], 99) for mode in MODES}
    ctx.detail(
        "order write with the broker up / down / hung",
        f"{n} × order_create per mode and round, {rounds} interleaved rounds, 1 n8n + 1 Bitrix24 integration, "
        "wake-ups on (sent by the background sender thread, one message per integration). down = a closed port on "
        "127.0.0.1; hung = a local TCP server that accepts and never answers.\n"
        + f"Wake-up messages that reached the live broker: {messages} for {rounds * n + 10} writes with it up (and the "
        "writes that piled up during each outage, sent when it ended).\n"
        + "\n".join(
            f"- {mode}: p50 {percentile(samples[mode], 50):.2f} ms, p99 {p99[mode]:.2f} ms, "
            f"max {max(samples[mode]):.2f} ms over {len(samples[mode])} writes"
            for mode in MODES
        ),
    )
    return [
        Result(
            metric=f"order write p99, broker {mode}",
            baseline=p99["up"],
            ours=p99[mode],
            unit="ms",
            target="≤ 1.5×",
            passed=p99[mode] / p99["up"] <= 1.5,
            note=f"vs the p99 with the broker up, same run; {len(samples[mode])} writes.",
        )
        for mode in ("down", "hung")
    ]
