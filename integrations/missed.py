"""What an integration missed while it was disabled, and what enabling it again does about it.

Bitrix24 is a state sync: every object whose newest rows were skipped gets its current state recorded again (an update;
one without a link creates its deal or contact, looked up by ORIGIN_ID first), and a linked order deleted meanwhile gets
its skipped delete replayed. Database only; at most MAX_PER_RUN objects per kind a run (the hourly reconcile goes on
with the rest, it calls requeue_missed too). n8n is an event stream: skipped events are not replayed unless an operator
asks (`sync_retry --skipped`)."""

import logging

from django.contrib.contenttypes.models import ContentType
from django.db.models import BigIntegerField, Exists, Model, OuterRef, Q, QuerySet
from django.db.models.functions import Cast

from integrations import outbox, services
from integrations.models import EventType, ExternalLink, Integration, IntegrationKind, IntegrationSync, SyncStatus
from integrations.unlinked import KINDS, MAX_PER_RUN, requeue_unlinked

log = logging.getLogger("integrations.worker")
COUNT_KEYS = ("missed_requeued", "missed_deletes", "missed_left")


def missed_rows(*, integration: Integration, model: type[Model]) -> QuerySet:
    """Skipped rows with no newer row that was (or is being) delivered: the remote object is behind them."""
    content_type = ContentType.objects.get_for_model(model)
    newer_kept = IntegrationSync.objects.filter(
        integration=integration,
        content_type=content_type,
        object_id=OuterRef("object_id"),
        sequence__gt=OuterRef("sequence"),
    ).exclude(status__in=[SyncStatus.SKIPPED, SyncStatus.SUPERSEDED])
    return IntegrationSync.objects.filter(
        integration=integration, content_type=content_type, status=SyncStatus.SKIPPED
    ).filter(~Exists(newer_kept))


def requeue_missed(*, integration: Integration) -> dict[str, int]:
    """Record the latest state of what a Bitrix24 integration missed (idempotent: a recorded row is newer than the
    skipped ones, so the object is not picked again); returns the counts named in COUNT_KEYS."""
    counts = dict.fromkeys(COUNT_KEYS, 0)
    if integration.kind != IntegrationKind.BITRIX24:
        return counts
    for model, scope in KINDS:  # customers first: deals need their contacts
        if not integration.wants(f"{model._meta.model_name}.updated"):
            continue  # record() would write nothing and the same objects would come back every run
        rows = missed_rows(integration=integration, model=model)
        objects = model.objects.filter(
            scope, pk__in=rows.annotate(pk_value=Cast("object_id", BigIntegerField())).values("pk_value")
        ).order_by("pk")
        batch = list(objects[:MAX_PER_RUN])
        for obj in batch:
            counts["missed_requeued"] += bool(
                outbox.record(obj, EventType.UPDATED, changes={}, integrations=[integration])
            )
        if len(batch) == MAX_PER_RUN:
            counts["missed_left"] += objects.count()
    counts["missed_deletes"] = _replay_missed_deletes(integration=integration)
    if any(counts.values()):
        log.info("[WORKER] reconcile integration=%s missed while disabled: %s", integration.pk, counts)
    return counts


def _replay_missed_deletes(*, integration: Integration) -> int:
    """A linked order deleted while the integration was disabled: its deal still has to move to the cancelled stage."""
    from orders.models import Order

    content_type = ContentType.objects.get_for_model(Order)
    linked = ExternalLink.objects.filter(
        integration=integration, content_type=content_type, object_id=OuterRef("object_id")
    )
    deletes = missed_rows(integration=integration, model=Order).filter(Q(event_type=EventType.DELETED), Exists(linked))
    return sum(
        services.sync_replay(sync=row).status == SyncStatus.PENDING for row in deletes.order_by("id")[:MAX_PER_RUN]
    )


def integration_reenabled(*, integration: Integration) -> str:
    """After an integration went from disabled to enabled: its reason is cleared; Bitrix24 gets the latest state of
    what it missed (and of unlinked objects), n8n nothing. Returns a line for the operator (no secrets)."""
    Integration.objects.filter(pk=integration.pk).update(disabled_reason="")
    integration.disabled_reason = ""
    if integration.kind != IntegrationKind.BITRIX24:
        skipped = IntegrationSync.objects.filter(integration=integration, status=SyncStatus.SKIPPED).count()
        return (
            f"{integration.name} enabled: {skipped} skipped events are not replayed; to send them: "
            f"manage.py sync_retry --skipped --integration {integration.name}"
        )
    missed = requeue_missed(integration=integration)
    unlinked = requeue_unlinked(integration=integration)
    line = (
        f"{integration.name} enabled: latest state queued for {missed['missed_requeued']} objects missed while "
        f"disabled, {missed['missed_deletes']} deleted orders, {unlinked['requeued'] + unlinked['revived']} unlinked"
    )
    left = missed["missed_left"] + unlinked["unlinked_left"]
    return line + (f"; {left} more are queued by the hourly reconcile" if left else "")
