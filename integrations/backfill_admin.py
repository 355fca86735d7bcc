"""The admin's backfill action: a small shop is queued in the request, a big one in a Celery task."""

from django.contrib import messages

from integrations.backfill import BackfillError, backfill_check, backfill_start, not_yet_sent
from integrations.models import Integration, IntegrationKind
from integrations.unlinked import KINDS

INLINE_MAX = 1000  # objects to queue; more go to a worker (queueing is ~2 ms per object, a request must stay short)


def backfill_from_admin(*, integration: Integration) -> tuple[int, str]:
    """(message level, message) for one selected integration; nothing is queued when the check fails."""
    name = integration.name
    if integration.kind != IntegrationKind.BITRIX24:
        return messages.WARNING, (
            f"{name}: the backfill action is for Bitrix24; an n8n flow gets old objects only when asked explicitly: "
            f"manage.py bitrix_backfill --n8n {name}"
        )
    try:
        backfill_check(integration=integration)
    except BackfillError as exc:
        return messages.ERROR, str(exc)
    watch = (
        f"Progress: manage.py bitrix_backfill --integration {name} --watch, or Sync rows filtered by integration "
        f"{name} and event type created."
    )
    waiting = sum(not_yet_sent(integration=integration, model=m, scope=q).count() for m, q in KINDS)
    if waiting > INLINE_MAX:
        from integrations.tasks import backfill_integration

        try:
            backfill_integration.apply_async(args=[integration.pk], retry=False)
        except Exception as exc:  # noqa: BLE001 - the broker is down: say so, nothing was queued
            return messages.ERROR, f"{name}: the task could not be queued ({type(exc).__name__}); nothing was queued"
        return messages.INFO, (
            f"{name}: backfill of {waiting} customers and orders runs in a worker (adopted deals are in the worker "
            f"log). {watch}"
        )
    try:
        run = backfill_start(integration=integration, checked=True)
    except BackfillError as exc:
        return messages.ERROR, str(exc)
    queued = sum(c["queued"] for c in run.counts.values())
    adopted = len(run.adopted)
    return messages.INFO, (
        f"{name}: {queued} customers and orders queued, {adopted} existing deals/contacts adopted"
        f"{'' if not run.conflicts else f', {len(run.conflicts)} not adopted (linked elsewhere)'}. {watch}"
    )
