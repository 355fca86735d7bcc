"""What a portal already holds before a backfill: deals and contacts that are ours by ORIGINATOR_ID + ORIGIN_ID, and
deals the old system titled `Order #N`. Reads only (crm.*.list), behind the shared per-portal rate limit."""

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from integrations.clients.bitrix24 import MAX_BATCH, BitrixClient
from integrations.reconcile import _TITLE, TITLE_PREFIX, ReconcileError, _describe

PAGE = 50  # rows per crm.*.list page (fixed by Bitrix24)
BY_ORIGIN = "ORIGIN_ID"
BY_TITLE = "title"


@dataclass
class Found:
    """One remote object an object of ours can adopt."""

    remote_id: str
    by: str  # BY_ORIGIN | BY_TITLE
    stage_id: str = ""


@dataclass
class PortalScan:
    """(model name, object id) → the deal or contact to adopt; duplicates: object ids with more than one candidate."""

    found: dict[tuple[str, str], Found] = field(default_factory=dict)
    duplicates: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    calls: int = 0


def list_every(client: BitrixClient, method: str, params: dict[str, Any]) -> tuple[list[dict], int]:
    """Every row of a crm.*.list: the first page, then the other pages 50 at a time in batch calls (one request per
    2,500 rows instead of one per 50). Returns (rows, requests made); a failed page raises ReconcileError."""
    first = client.call(method, {**params, "start": 0})
    if not first.ok or not isinstance(first.result, list):
        raise ReconcileError(f"{method} failed on {client.masked_url}: {_describe(first)}")
    rows, calls = list(first.result), 1
    starts = list(range(PAGE, first.total or 0, PAGE)) if first.next is not None else []
    for offset in range(0, len(starts), MAX_BATCH):
        commands = {f"p{s}": (method, {**params, "start": s}) for s in starts[offset : offset + MAX_BATCH]}
        response = client.batch(commands)
        calls += 1
        if not response.ok or response.errors:
            raise ReconcileError(f"{method} pages failed on {client.masked_url}: {_describe(response)}")
        for key in commands:
            page = response.results.get(key)
            rows.extend(page if isinstance(page, list) else [])
    return [r for r in rows if isinstance(r, dict)], calls


def scan_portal(client: BitrixClient) -> PortalScan:
    """Our deals and contacts by ORIGIN_ID, then deals titled `Order #N` that carry no ORIGIN_ID of ours."""
    scan = PortalScan()
    originator = settings.BITRIX_ORIGINATOR_ID
    select = ["ID", "ORIGINATOR_ID", "ORIGIN_ID", "TITLE", "STAGE_ID"]
    order = {"ID": "ASC"}
    ours = {"ORIGINATOR_ID": originator}
    for model, method in (("user", "crm.contact.list"), ("order", "crm.deal.list")):
        rows, calls = list_every(client, method, {"filter": ours, "select": select, "order": order})
        scan.calls += calls
        for row in rows:
            key = str(row.get("ORIGIN_ID") or "").strip()
            if key and str(row.get("ORIGINATOR_ID") or "") == originator:
                _add(scan, (model, key), Found(str(row["ID"]), BY_ORIGIN, str(row.get("STAGE_ID") or "")))
    titled, calls = list_every(
        client, "crm.deal.list", {"filter": {"%TITLE": TITLE_PREFIX}, "select": select, "order": order}
    )
    scan.calls += calls
    for row in titled:
        match = _TITLE.match(str(row.get("TITLE") or ""))
        ours_already = str(row.get("ORIGINATOR_ID") or "") == originator and str(row.get("ORIGIN_ID") or "").strip()
        if match and not ours_already:
            _add(scan, ("order", match.group(1)), Found(str(row["ID"]), BY_TITLE, str(row.get("STAGE_ID") or "")))
    return scan


def _add(scan: PortalScan, key: tuple[str, str], found: Found) -> None:
    """Keep one candidate per object: ORIGIN_ID before title, then the lowest id; remember the others."""
    current = scan.found.get(key)
    if current is None:
        scan.found[key] = found
        return
    scan.duplicates.setdefault(key, [current.remote_id]).append(found.remote_id)
    if current.by == BY_TITLE and found.by == BY_ORIGIN:
        scan.found[key] = found
    elif current.by == found.by and int(found.remote_id) < int(current.remote_id):
        scan.found[key] = found
