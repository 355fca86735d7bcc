"""Orders and customers without a Bitrix24 link: revive their dead create, queue a missing one, report failed ones.

Part of the hourly `reconcile_bitrix`. Database only (no HTTP); each run handles at most MAX_PER_RUN objects per kind.
"""

import logging

from django.contrib.contenttypes.models import ContentType
from django.db.models import CharField, Exists, Model, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Cast

from integrations import outbox, services
from integrations.models import OPEN_STATUSES, EventType, ExternalLink, Integration, IntegrationSync, SyncStatus
from orders.models import Order
from users.models import User

log = logging.getLogger("integrations.worker")
MAX_PER_RUN = 500  # per kind and run: a backlog drains over several hours instead of flooding the outbox at once
REASON_CHARS = 200
COUNT_KEYS = ("revived", "requeued", "unlinked_failed", "unlinked_left")
KINDS: tuple[tuple[type[Model], Q], ...] = ((User, Q(is_staff=False)), (Order, Q()))  # users first: deals need contacts


def find_unlinked(*, integration: Integration, model: type[Model], scope: Q | None = None) -> QuerySet:
    """Objects (within scope) with no link and no open row for the integration, oldest first.

    Each carries its "created" row as created_id / created_status / created_error (None when there is none)."""
    # Open rows are on their way: an open update of an unlinked object creates the remote object itself.
    same_object = {
        "integration": integration,
        "content_type": ContentType.objects.get_for_model(model),
        "object_id": Cast(OuterRef("pk"), CharField()),
    }
    created = IntegrationSync.objects.filter(**same_object, event_type=EventType.CREATED).order_by()  # one row at most
    return (
        model.objects.filter(
            scope or Q(),
            ~Exists(ExternalLink.objects.filter(**same_object)),
            ~Exists(IntegrationSync.objects.filter(**same_object, status__in=OPEN_STATUSES)),
        )
        .annotate(
            created_id=Subquery(created.values("pk")[:1]),
            created_status=Subquery(created.values("status")[:1]),
            created_error=Subquery(created.values("last_error")[:1]),
        )
        .order_by("pk")
    )


def requeue_unlinked(*, integration: Integration) -> dict[str, int]:
    """Customers, then orders, of one integration; returns the counts named in COUNT_KEYS."""
    counts = dict.fromkeys(COUNT_KEYS, 0)
    for model, scope in KINDS:
        for key, value in _requeue_kind(integration=integration, model=model, scope=scope).items():
            counts[key] += value
    if any(counts.values()):
        log.info("[WORKER] reconcile integration=%s unlinked objects: %s", integration.pk, counts)
    return counts


def _requeue_kind(*, integration: Integration, model: type[Model], scope: Q) -> dict[str, int]:
    unlinked = find_unlinked(integration=integration, model=model, scope=scope)
    name = model._meta.model_name
    due = Q(created_status=SyncStatus.DEAD)
    if integration.wants(f"{name}.created"):  # otherwise record() writes nothing and the object would come back hourly
        due |= Q(created_id__isnull=True)
    batch = list(unlinked.filter(due)[:MAX_PER_RUN])
    dead = IntegrationSync.objects.in_bulk([obj.created_id for obj in batch if obj.created_id])
    revived = requeued = 0
    for obj in batch:
        if obj.created_id:
            # Same event id, attempts reset; a create that may have landed is looked up by ORIGIN_ID before it is sent.
            revived += services.sync_replay(sync=dead[obj.created_id]).status == SyncStatus.PENDING
        else:
            requeued += bool(outbox.record(obj, EventType.CREATED, integrations=[integration]))
    left = unlinked.filter(due).count() if len(batch) == MAX_PER_RUN else 0
    if left:
        log.info("[WORKER] reconcile integration=%s %s unlinked %ss left for the next run", integration.pk, left, name)
    failed = _report_failed(integration=integration, unlinked=unlinked, name=name)
    return {"revived": revived, "requeued": requeued, "unlinked_failed": failed, "unlinked_left": left}


def _report_failed(*, integration: Integration, unlinked: QuerySet, name: str) -> int:
    """Terminal creates are not retried (they would fail the same way): one warning per object, for an operator."""
    failed = unlinked.filter(created_status=SyncStatus.FAILED)
    total = failed.count()
    for pk, sync_id, error in failed.values_list("pk", "created_id", "created_error")[:MAX_PER_RUN]:
        log.warning(
            "[WORKER] reconcile integration=%s %s=%s has no link: its create sync=%s failed (not retried): %s",
            integration.pk,
            name,
            pk,
            sync_id,
            (error or "no reason recorded")[:REASON_CHARS],
        )
    if total > MAX_PER_RUN:
        more = total - MAX_PER_RUN
        log.warning("[WORKER] reconcile integration=%s %s more %ss with a failed create", integration.pk, more, name)
    return total
