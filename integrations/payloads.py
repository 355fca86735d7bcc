"""Pure payload builders: snapshots of our objects and the bodies each target sends. No DB, no HTTP."""

from datetime import datetime
from decimal import Decimal
from typing import Any

USER_FIELDS = ("id", "email", "phone", "first_name", "last_name", "is_active")
ORDER_FIELDS = (
    "id",
    "user_id",
    "title",
    "quantity",
    "amount",
    "currency",
    "status",
    "comment",
    "created_at",
    "updated_at",
)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def snapshot(obj: Any) -> dict[str, Any]:
    """The object's state as JSON-ready data (what every target and history row keeps)."""
    fields = ORDER_FIELDS if hasattr(obj, "amount") else USER_FIELDS
    return {name: _plain(getattr(obj, name, None)) for name in fields}


def n8n_event(
    *,
    event_id: str,
    object_type: str,
    event_type: str,
    object_id: str,
    sequence: int,
    occurred_at: datetime,
    data: dict,
    changes: dict,
    backfill: bool = False,
) -> dict[str, Any]:
    """The n8n event body of DESIGN §3; a backfilled `created` event (bitrix_backfill --n8n) adds "backfill": true."""
    oid: Any = int(object_id) if str(object_id).isdigit() else object_id
    body: dict[str, Any] = {
        "id": str(event_id),
        "type": f"{object_type}.{event_type}",
        "occurred_at": occurred_at.isoformat(),
        "sequence": sequence,
        "object": {"type": object_type, "id": oid},
        "data": data,
        "changes": changes,
    }
    if backfill:
        body["backfill"] = True
    return body


def bitrix_contact_fields(data: dict, *, originator: str, existing: dict | None = None) -> dict[str, Any]:
    """crm.contact fields; EMAIL/PHONE edit the existing entry by ID (and delete extras) instead of appending."""
    existing = existing or {}
    return {
        "NAME": data.get("first_name") or "",
        "LAST_NAME": data.get("last_name") or "",
        "ORIGINATOR_ID": originator,
        "ORIGIN_ID": str(data["id"]),
        "EMAIL": _multi_field(data.get("email") or "", existing.get("EMAIL") or []),
        "PHONE": _multi_field(data.get("phone") or "", existing.get("PHONE") or []),
    }


def _multi_field(value: str, existing: list[dict]) -> list[dict]:
    entries = [e for e in existing if e.get("ID")]
    if not entries:
        return [{"VALUE": value, "VALUE_TYPE": "WORK"}] if value else []
    first, rest = entries[0], entries[1:]
    head = (
        {"ID": str(first["ID"]), "VALUE": value, "VALUE_TYPE": "WORK"}
        if value
        else {"ID": str(first["ID"]), "DELETE": "Y"}
    )
    return [head] + [{"ID": str(e["ID"]), "DELETE": "Y"} for e in rest]


def multi_field_ids(entity: dict) -> dict[str, list[dict]]:
    """Keep only the IDs of a contact's EMAIL/PHONE entries (what the next update needs)."""
    return {
        key: [{"ID": str(e.get("ID"))} for e in (entity.get(key) or []) if isinstance(e, dict) and e.get("ID")]
        for key in ("EMAIL", "PHONE")
    }


def bitrix_deal_fields(
    data: dict, *, originator: str, stage_map: dict[str, str], contact_id: str | None
) -> dict[str, Any]:
    """crm.deal fields for an order snapshot."""
    fields: dict[str, Any] = {
        "TITLE": f"Order #{data['id']}",
        "ORIGINATOR_ID": originator,
        "ORIGIN_ID": str(data["id"]),
        "OPPORTUNITY": str(data.get("amount") or "0"),
        "CURRENCY_ID": data.get("currency") or "USD",
        "STAGE_ID": stage_map.get(data.get("status") or "", "NEW"),
        "COMMENTS": data.get("comment") or "",
    }
    if contact_id:
        fields["CONTACT_IDS"] = [str(contact_id)]
    return fields


def status_for_stage(stage_id: str, stage_map: dict[str, str]) -> str | None:
    """Reverse of the stage map; None for a stage we do not know (recorded, never guessed)."""
    for status, stage in stage_map.items():
        if stage == stage_id:
            return status
    return None
