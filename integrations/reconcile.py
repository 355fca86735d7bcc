"""Bitrix24 reconciliation: duplicate deals (reported; fixed only on request) and drift of linked deals (re-synced).

Reads use crm.deal.list with `select`/`filter` behind the shared per-portal rate limit. A listing that failed part way
raises ReconcileError: nothing is ever deleted or re-synced on the strength of an incomplete picture.
"""

import logging
import re
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, transaction

from integrations import outbox, payloads
from integrations.clients.bitrix24 import BitrixClient, BitrixResponse, mask_webhook_url
from integrations.errors import ConfigurationError
from integrations.missed import COUNT_KEYS as MISSED_KEYS
from integrations.missed import requeue_missed
from integrations.models import OPEN_STATUSES, EventType, ExternalLink, Integration, IntegrationKind, IntegrationSync
from integrations.targets.bitrix_limits import RateLimitTimeout, bitrix_client_for
from integrations.unlinked import COUNT_KEYS as UNLINKED_KEYS
from integrations.unlinked import requeue_unlinked

log = logging.getLogger("integrations.worker")
DEAL_SELECT = ["ID", "TITLE", "ORIGINATOR_ID", "ORIGIN_ID", "STAGE_ID", "OPPORTUNITY", "CURRENCY_ID"]
TITLE_PREFIX = "Order #"
_TITLE = re.compile(r"^\s*Order #(\d+)\s*$")
ID_CHUNK = 50  # one list page per chunk of linked ids


class ReconcileError(Exception):
    """Bitrix24 could not be read completely (message is safe to print: no webhook code)."""


def client_for(integration: Integration, purpose: str = "reconcile") -> BitrixClient:
    """Requests carry `<purpose>:<run id>` as X-Request-Id: the portal's log tells reconcile reads from deliveries.
    A QUERY_LIMIT_EXCEEDED is waited out (the shared bucket) rather than ending the run."""
    return bitrix_client_for(integration, request_id=f"{purpose}:{uuid.uuid4().hex[:12]}", wait_on_rate_limit=True)


def _order_ct() -> ContentType:
    return ContentType.objects.get(app_label="orders", model="order")


def _list(client: BitrixClient, params: dict[str, Any]) -> list[dict]:
    rows = client.list_all("crm.deal.list", params)
    if not rows.complete:
        raise ReconcileError(f"crm.deal.list failed on {client.masked_url}: {_describe(rows.failure)}")
    return [r for r in rows if isinstance(r, dict)]


def _describe(response: BitrixResponse | None) -> str:
    if response is None:
        return "unknown error"
    code = response.error or response.http.error_class or f"HTTP {response.http.status}"
    return f"{code} {response.error_description or response.http.error}".strip()


# -- duplicates ---------------------------------------------------------------------------------------------------


def find_duplicates(integration: Integration, order_id: int | str | None = None) -> list[dict]:
    """Groups of more than one deal per order: ours by ORIGIN_ID, plus deals titled `Order #N` without (our) ORIGIN_ID.

    Each group: integration_id, order_id, deal_ids (ascending), linked_id (our ExternalLink, or None), keep (linked,
    else the lowest of our ORIGIN_ID deals, else the lowest id), extra (to delete: never the kept one nor any linked
    deal), linked_elsewhere (deals linked to another order, left alone).
    """
    client = client_for(integration)
    originator = settings.BITRIX_ORIGINATOR_ID
    ours_filter: dict[str, Any] = {"ORIGINATOR_ID": originator}
    title_filter: dict[str, Any] = {"%TITLE": TITLE_PREFIX + (str(order_id) if order_id is not None else "")}
    if order_id is not None:
        ours_filter["ORIGIN_ID"] = str(order_id)
    common = {"select": DEAL_SELECT, "order": {"ID": "ASC"}}
    ours = _list(client, {**common, "filter": ours_filter})
    titled = _list(client, {**common, "filter": title_filter})

    groups: dict[str, dict[str, dict]] = {}
    for deal in ours:
        key = str(deal.get("ORIGIN_ID") or "").strip()
        if key and str(deal.get("ORIGINATOR_ID") or "") == originator:
            groups.setdefault(key, {})[str(deal["ID"])] = deal
    for deal in titled:
        found = _TITLE.match(str(deal.get("TITLE") or ""))
        if not found:
            continue
        is_ours = str(deal.get("ORIGINATOR_ID") or "") == originator and str(deal.get("ORIGIN_ID") or "").strip()
        if is_ours:
            continue  # grouped by its ORIGIN_ID above
        groups.setdefault(found.group(1), {})[str(deal["ID"])] = deal
    if order_id is not None:
        groups = {k: v for k, v in groups.items() if k == str(order_id)}

    candidates = {k: v for k, v in groups.items() if len(v) > 1}
    if not candidates:
        return []
    order_ct = _order_ct()
    all_ids = [i for deals in candidates.values() for i in deals]
    linked_to = dict(
        ExternalLink.objects.filter(integration=integration, content_type=order_ct, remote_id__in=all_ids).values_list(
            "remote_id", "object_id"
        )
    )
    own_links = dict(
        ExternalLink.objects.filter(
            integration=integration, content_type=order_ct, object_id__in=list(candidates)
        ).values_list("object_id", "remote_id")
    )
    result = []
    for key in sorted(candidates, key=lambda k: (len(k), k)):
        deals = candidates[key]
        ids = sorted(deals, key=int)
        linked = own_links.get(key) if own_links.get(key) in deals else None
        if linked:
            keep = linked
        else:
            ours_ids = [i for i in ids if str(deals[i].get("ORIGIN_ID") or "").strip() == key]
            keep = (ours_ids or ids)[0]
        elsewhere = [i for i in ids if i in linked_to and linked_to[i] != key]
        extra = [i for i in ids if i != keep and i not in linked_to]
        result.append(
            {
                "integration_id": integration.pk,
                "order_id": key,
                "deal_ids": ids,
                "linked_id": linked,
                "stale_link": own_links.get(key) if own_links.get(key) and not linked else None,
                "keep": keep,
                "extra": extra,
                "linked_elsewhere": elsewhere,
                "deals": [deals[i] for i in ids],
            }
        )
    return result


def link_adopt(
    integration: Integration, order_id: str, remote_id: str, stage_id: str | None = None, *, model: str = "order"
) -> ExternalLink:
    """Write order → deal (model "user": customer → contact) link if the object has none (get_or_create; a remote
    object linked elsewhere raises IntegrityError)."""
    content_type = _order_ct() if model == "order" else ContentType.objects.get(app_label="users", model="user")
    with transaction.atomic():
        link, _ = ExternalLink.objects.get_or_create(
            integration=integration,
            content_type=content_type,
            object_id=str(order_id),
            defaults={"remote_id": str(remote_id), "remote_state": {"STAGE_ID": stage_id} if stage_id else {}},
        )
    return link


def fix_duplicates(groups: list[dict]) -> list[dict]:
    """Delete each group's extra deals with crm.deal.delete; never the kept (linked) deal nor any linked deal.

    A group without a link first gets one to the kept deal (only when the order exists here). Returns one row per
    deal acted on: order_id, deal_id, action (deleted | delete failed | linked | link failed | skipped), detail.
    """
    from orders.models import Order

    done: list[dict] = []
    clients: dict[int, BitrixClient] = {}
    order_ct = _order_ct()
    for group in groups:
        integration = Integration.objects.get(pk=group["integration_id"])
        client = clients.setdefault(integration.pk, client_for(integration))
        key, keep = group["order_id"], group["keep"]
        link = ExternalLink.objects.filter(integration=integration, content_type=order_ct, object_id=key).first()
        if link is None and Order.objects.filter(pk=int(key)).exists():
            stage = next((d.get("STAGE_ID") for d in group.get("deals", []) if str(d.get("ID")) == keep), None)
            try:
                link = link_adopt(integration, key, keep, stage)
            except IntegrityError:
                done.append(_row(key, keep, "link failed", "deal already linked to another order; nothing deleted"))
                continue
            done.append(_row(key, keep, "linked", "kept deal linked to the order"))
            log.info("[WORKER] reconcile order=%s linked to kept deal %s", key, keep)
        if link is not None and link.remote_id != keep:
            done.append(_row(key, keep, "skipped", f"order is linked to deal {link.remote_id}; nothing deleted"))
            continue
        # Re-read links right before deleting: a deal linked since the scan is never deleted.
        linked_now = set(
            ExternalLink.objects.filter(
                integration=integration, content_type=order_ct, remote_id__in=group["extra"]
            ).values_list("remote_id", flat=True)
        )
        for deal_id in group["extra"]:
            if deal_id == keep or deal_id in linked_now:
                done.append(_row(key, deal_id, "skipped", "deal is linked"))
                continue
            response = client.call("crm.deal.delete", {"id": deal_id})
            if response.ok:
                done.append(_row(key, deal_id, "deleted", f"kept {keep}"))
                log.info("[WORKER] reconcile order=%s deleted duplicate deal %s (kept %s)", key, deal_id, keep)
            else:
                done.append(_row(key, deal_id, "delete failed", _describe(response)))
                log.warning(
                    "[WORKER] reconcile order=%s delete of deal %s failed: %s", key, deal_id, _describe(response)
                )
    return done


def _row(order_id: str, deal_id: str, action: str, detail: str) -> dict:
    return {"order_id": order_id, "deal_id": deal_id, "action": action, "detail": detail}


# -- drift --------------------------------------------------------------------------------------------------------


def find_drift(integration: Integration) -> list[dict]:
    """Linked deals whose STAGE_ID/OPPORTUNITY/CURRENCY_ID differ from the order's current state, and missing deals.

    Orders with an open sync for this integration are skipped (their state is on its way). Each item: integration_id,
    order_id, deal_id, kind ("changed" | "missing"), fields {name: [remote, expected]}.
    """
    from orders.models import Order

    order_ct = _order_ct()
    links = dict(
        ExternalLink.objects.filter(integration=integration, content_type=order_ct).values_list(
            "object_id", "remote_id"
        )
    )
    if not links:
        return []
    busy = set(
        IntegrationSync.objects.filter(
            integration=integration, content_type=order_ct, status__in=OPEN_STATUSES, object_id__in=list(links)
        ).values_list("object_id", flat=True)
    )
    orders = {str(o.pk): o for o in Order.objects.filter(pk__in=[int(k) for k in links if k.isdigit()])}
    wanted = {oid: rid for oid, rid in links.items() if oid in orders and oid not in busy}
    client = client_for(integration)
    remote: dict[str, dict] = {}
    ids = sorted({rid for rid in wanted.values() if rid.isdigit()}, key=int)
    for start in range(0, len(ids), ID_CHUNK):
        chunk = ids[start : start + ID_CHUNK]
        for deal in _list(client, {"filter": {"@ID": chunk}, "select": ["ID", *_DRIFT_FIELDS]}):
            remote[str(deal.get("ID"))] = deal
    drift = []
    for order_id in sorted(wanted, key=int):
        deal_id = wanted[order_id]
        deal = remote.get(deal_id)
        item = {"integration_id": integration.pk, "order_id": order_id, "deal_id": deal_id}
        if deal is None:
            drift.append({**item, "kind": "missing", "fields": {}})
            continue
        expected = payloads.bitrix_deal_fields(
            payloads.snapshot(orders[order_id]),
            originator=settings.BITRIX_ORIGINATOR_ID,
            stage_map=settings.BITRIX_STAGE_MAP,
            contact_id=None,
        )
        changed = {
            name: [deal.get(name), expected[name]]
            for name in _DRIFT_FIELDS
            if not _same(name, deal.get(name), expected[name])
        }
        if changed:
            drift.append({**item, "kind": "changed", "fields": changed})
    return drift


_DRIFT_FIELDS = ("STAGE_ID", "OPPORTUNITY", "CURRENCY_ID")


def _same(name: str, remote: Any, expected: Any) -> bool:
    if name == "OPPORTUNITY":
        try:
            return Decimal(str(remote or "0")) == Decimal(str(expected or "0"))
        except InvalidOperation:
            return False
    return str(remote or "") == str(expected or "")


# -- the beat task ------------------------------------------------------------------------------------------------


def reconcile_all() -> dict:
    """Every enabled bitrix24 integration: queue what it missed while disabled and unlinked objects, report
    duplicates (never fixed here), re-sync drifted orders; counts."""
    from orders.models import Order

    counts = {
        "integrations": 0,
        "duplicate_groups": 0,
        "extra_deals": 0,
        "drifted": 0,
        "missing": 0,
        "resynced": 0,
        "errors": 0,
        **dict.fromkeys(MISSED_KEYS, 0),
        **dict.fromkeys(UNLINKED_KEYS, 0),
        "unlinked_errors": 0,
    }
    resynced: set[str] = set()
    integrations = list(Integration.objects.filter(kind=IntegrationKind.BITRIX24, enabled=True).order_by("id"))
    # Its own loop, first and guarded: it needs no portal read, and neither part may stop the other.
    for integration in integrations:
        try:
            for key, value in {
                **requeue_missed(integration=integration),
                **requeue_unlinked(integration=integration),
            }.items():
                counts[key] += value
        except Exception:  # noqa: BLE001 - logged with its traceback; duplicates and drift still run
            counts["unlinked_errors"] += 1
            log.exception("[WORKER] reconcile integration=%s unlinked objects skipped", integration.pk)
    for integration in integrations:
        counts["integrations"] += 1
        where = mask_webhook_url(integration.endpoint)
        try:
            groups = find_duplicates(integration)
            drift = find_drift(integration)
        except (ReconcileError, RateLimitTimeout, ConfigurationError) as exc:
            counts["errors"] += 1
            log.warning("[WORKER] reconcile integration=%s (%s) skipped: %s", integration.pk, where, exc)
            continue
        for group in groups:
            counts["duplicate_groups"] += 1
            counts["extra_deals"] += len(group["extra"])
            log.warning(
                "[WORKER] reconcile integration=%s order=%s has %s deals %s (linked %s, keep %s, extra %s); "
                "run bitrix_duplicates --order %s --fix",
                integration.pk,
                group["order_id"],
                len(group["deal_ids"]),
                ",".join(group["deal_ids"]),
                group["linked_id"] or "-",
                group["keep"],
                ",".join(group["extra"]) or "-",
                group["order_id"],
            )
        for item in drift:
            if item["kind"] == "missing":
                counts["missing"] += 1
                log.warning(
                    "[WORKER] reconcile integration=%s order=%s linked deal %s not found in Bitrix24 (not re-created)",
                    integration.pk,
                    item["order_id"],
                    item["deal_id"],
                )
                continue
            counts["drifted"] += 1
            log.info(
                "[WORKER] reconcile integration=%s order=%s deal=%s drift %s",
                integration.pk,
                item["order_id"],
                item["deal_id"],
                item["fields"],
            )
            if item["order_id"] in resynced:
                continue
            order = Order.objects.filter(pk=int(item["order_id"])).first()
            if order is None:
                continue
            outbox.record(order, EventType.UPDATED, changes={}, integrations=[integration])  # not n8n: no change
            resynced.add(item["order_id"])
            counts["resynced"] += 1
    log.info("[WORKER] reconcile done %s", counts)
    return counts
