"""Order save (create + update through orders.services) with 1 n8n + 1 Bitrix24 integration vs none; wake-ups off."""

import statistics
import time
from decimal import Decimal

from bench.report import Result


def _round(user, n: int) -> float:
    from orders import services

    started = time.perf_counter()
    for i in range(n):
        order = services.order_create(user=user, title=f"bench {i}", amount=Decimal("10.00"))
        services.order_update(order=order, data={"title": f"bench {i} v2", "quantity": 2})
    return (time.perf_counter() - started) / n * 1000.0  # ms per create+update


def _integrations(on: bool) -> None:
    from integrations.models import Integration, IntegrationKind

    if not on:
        Integration.objects.all().delete()
        return
    Integration.objects.create(
        kind=IntegrationKind.N8N, name="n8n", endpoint="http://127.0.0.1:9/none", secret="whsec_" + "A" * 32
    )
    Integration.objects.create(
        kind=IntegrationKind.BITRIX24, name="bitrix", endpoint="http://127.0.0.1:9/rest/1/x/", rate_limit="2/50"
    )


def run(ctx) -> list[Result]:
    from bench.django_setup import make_user

    n = ctx.size(30, 300)
    rounds = ctx.size(2, 3)
    user = make_user(0)
    _round(user, 10)  # warm-up (connections, content types, code paths)
    base, ours = [], []
    for _ in range(rounds):  # interleaved rounds so drift hits both sides alike
        _integrations(False)
        base.append(_round(user, n))
        _integrations(True)
        ours.append(_round(user, n))
    _integrations(False)
    b, o = statistics.median(base), statistics.median(ours)
    ctx.detail(
        "order save",
        f"{n} × (order_create + order_update) per round, {rounds} interleaved rounds, median ms per pair.\n"
        f"Baseline rounds: {[round(x, 2) for x in base]}; ours: {[round(x, 2) for x in ours]}.\n"
        "Ours writes per pair: 2 events × 2 integrations = 4 IntegrationSync rows + 4 sequence-counter upserts.",
    )
    return [
        Result(
            metric="order save create+update",
            baseline=b,
            ours=o,
            unit="ms/pair",
            target="≤ 1.5×",
            passed=o / b <= 1.5,
            note="1 n8n + 1 Bitrix24 integration vs none; wake-ups off; same DB and process.",
        )
    ]
