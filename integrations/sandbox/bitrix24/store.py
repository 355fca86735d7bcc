"""Thread-safe in-memory CRM tables (deals, contacts) with the portal's write, read and list semantics."""

import copy
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .fields import CONTACT_FIELDS, DEAL_FIELDS, MULTI_FIELDS, Field, to_portal_string
from .listing import list_rows

PAGE_SIZE = 50
ChangeCallback = Callable[[str, int], None]


class NotFound(LookupError):
    """No record with that id."""


@dataclass
class Table:
    """One entity type's rows, keyed by integer id."""

    name: str  # DEAL / CONTACT, as used in event names
    fields: dict[str, Field]
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


class CrmStore:
    """The portal's CRM data; on_change(event_name, id) is called after each committed mutation, outside the lock."""

    def __init__(self, user_id: int = 1, on_change: ChangeCallback | None = None):
        self.user_id = str(user_id)
        self.on_change = on_change
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Drop all data and restart ids."""
        with self._lock:
            self._tables = {"deal": Table("DEAL", DEAL_FIELDS), "contact": Table("CONTACT", CONTACT_FIELDS)}
            self._multi_ids = itertools.count(1)

    def fields(self, entity: str) -> dict[str, Field]:
        return self._tables[entity].fields

    def add(self, entity: str, values: dict[str, Any]) -> int:
        """Create a record and return its int id."""
        with self._lock:
            table = self._tables[entity]
            new_id, table.next_id = table.next_id, table.next_id + 1
            now = _now()
            row: dict[str, Any] = {"ID": str(new_id), "DATE_CREATE": now, "CREATED_BY_ID": self.user_id}
            row.update(self._defaults(entity, new_id))
            self._write(table, row, values)
            table.rows[new_id] = row
        self._notify(table, "ADD", new_id)
        return new_id

    def update(self, entity: str, record_id: Any, values: dict[str, Any]) -> None:
        """Apply values to an existing record; raises NotFound."""
        with self._lock:
            table = self._tables[entity]
            row = table.rows.get(_as_id(record_id))
            if row is None:
                raise NotFound(record_id)
            self._write(table, row, values)
        self._notify(table, "UPDATE", int(row["ID"]))

    def delete(self, entity: str, record_id: Any) -> None:
        """Remove a record; raises NotFound."""
        with self._lock:
            table = self._tables[entity]
            if table.rows.pop(_as_id(record_id), None) is None:
                raise NotFound(record_id)
        self._notify(table, "DELETE", _as_id(record_id))

    def get(self, entity: str, record_id: Any) -> dict[str, Any]:
        """The record as crm.*.get returns it; raises NotFound."""
        with self._lock:
            table = self._tables[entity]
            row = table.rows.get(_as_id(record_id))
            if row is None:
                raise NotFound(record_id)
            return _render(table, row, select=None)

    def list(self, entity: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], int | None, int | None]:
        """One page of crm.*.list: (rows, total or None when start=-1, next or None)."""
        with self._lock:
            table = self._tables[entity]
            rows = list_rows(table.fields, list(table.rows.values()), params.get("filter"), params.get("order"))
            select = params.get("select") or None
            start = _as_int(params.get("start"), 0)
            if start == -1:  # the documented "skip the count" mode: no total, no next
                return [_render(table, r, select) for r in rows[:PAGE_SIZE]], None, None
            start = max(start, 0)
            page = [_render(table, r, select) for r in rows[start : start + PAGE_SIZE]]
            more = start + PAGE_SIZE < len(rows)
            return page, len(rows), (start + PAGE_SIZE if more else None)

    def snapshot(self, entity: str) -> dict[int, dict[str, Any]]:
        """Deep copy of the stored rows (including CONTACT_IDS, which get does not return)."""
        with self._lock:
            return copy.deepcopy(self._tables[entity].rows)

    def _defaults(self, entity: str, new_id: int) -> dict[str, Any]:
        common = {"ASSIGNED_BY_ID": self.user_id, "OPENED": "Y"}
        if entity == "deal":
            return {
                **common,
                "TITLE": f"Deal #{new_id}",
                "TYPE_ID": "SALE",
                "CATEGORY_ID": "0",
                "STAGE_ID": "NEW",
                "CURRENCY_ID": "RUB",
                "OPPORTUNITY": "0.00",
                "IS_NEW": "Y",
                "CLOSED": "N",
            }
        return {**common, "TYPE_ID": "CLIENT", "EXPORT": "Y", "HAS_EMAIL": "N", "HAS_PHONE": "N"}

    def _write(self, table: Table, row: dict[str, Any], values: dict[str, Any]) -> None:
        for name, value in (values or {}).items():
            spec = table.fields.get(str(name))
            if spec is None or spec.read_only:
                continue  # the portal silently ignores unknown and read-only fields
            if name in MULTI_FIELDS:
                self._write_multi(row, name, value)
            elif name == "CONTACT_IDS":
                items = (
                    list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
                )
                ids = [to_portal_string(v, spec) for v in items]
                row["CONTACT_IDS"] = [i for i in ids if i and i != "0"]
                row["CONTACT_ID"] = row["CONTACT_IDS"][0] if row["CONTACT_IDS"] else None
            elif name == "CONTACT_ID":
                row["CONTACT_ID"] = to_portal_string(value, spec)
                row["CONTACT_IDS"] = [row["CONTACT_ID"]] if row["CONTACT_ID"] else []
            else:
                row[name] = to_portal_string(value, spec)
        row["DATE_MODIFY"], row["MODIFY_BY_ID"] = _now(), self.user_id
        if table.name == "DEAL":
            stage = str(row.get("STAGE_ID") or "")
            won, lost = stage.endswith("WON"), stage.endswith("LOSE")
            row["CLOSED"] = "Y" if won or lost else "N"
            row["STAGE_SEMANTIC_ID"] = "S" if won else "F" if lost else "P"
        else:
            row["HAS_EMAIL"] = "Y" if row.get("EMAIL") else "N"
            row["HAS_PHONE"] = "Y" if row.get("PHONE") else "N"

    def _write_multi(self, row: dict[str, Any], name: str, value: Any) -> None:
        """Entries without ID are appended, with ID they replace that entry, DELETE=Y (or empty VALUE) removes it."""
        entries = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else []
        current: list[dict[str, str]] = row.setdefault(name, [])
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            entry_id = str(entry.get("ID") or "")
            if entry_id:
                target = next((e for e in current if e["ID"] == entry_id), None)
                if target is None:
                    continue
                if str(entry.get("DELETE", "")).upper() == "Y" or ("VALUE" in entry and not entry["VALUE"]):
                    current.remove(target)
                    continue
                if "VALUE" in entry:
                    target["VALUE"] = str(entry["VALUE"])
                if entry.get("VALUE_TYPE"):
                    target["VALUE_TYPE"] = str(entry["VALUE_TYPE"])
            elif entry.get("VALUE"):
                current.append(
                    {
                        "ID": str(next(self._multi_ids)),
                        "VALUE_TYPE": str(entry.get("VALUE_TYPE") or "WORK"),
                        "VALUE": str(entry["VALUE"]),
                        "TYPE_ID": name,
                    }
                )
        if not current:
            row.pop(name, None)

    def _notify(self, table: Table, action: str, record_id: int) -> None:
        if self.on_change is not None:
            self.on_change(f"ONCRM{table.name}{action}", record_id)


def _render(table: Table, row: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """Scalars as strings (None when unset); multi-fields only on get or when selected, as the portal does."""
    wanted = set(select) if select else {"*", *MULTI_FIELDS}
    out: dict[str, Any] = {}
    for name, spec in table.fields.items():
        if not spec.returned:
            continue
        if name in MULTI_FIELDS:
            if name in wanted and row.get(name):
                out[name] = copy.deepcopy(row[name])
        elif name == "ID" or "*" in wanted or name in wanted:
            out[name] = row.get(name)
    return out


def _as_id(value: Any) -> int:
    return _as_int(value, -1)


def _as_int(value: Any, default: int) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default
