"""crm.*.list filtering and ordering over stored rows (legacy CRM filter prefixes: =, %, !, >, <, >=, <=, @)."""

import re
from datetime import datetime
from typing import Any

from .fields import INTEGER_TYPES, MULTI_FIELDS, Field

_KEY = re.compile(r"^(>=|<=|!=|!%|!@|=|%|!|>|<|@)?(.+)$")
_NUMERIC = (*INTEGER_TYPES, "double")


def list_rows(fields: dict[str, Field], rows: list[dict[str, Any]], filter_: Any, order: Any) -> list[dict[str, Any]]:
    """Rows matching filter_, sorted by order (default ID ASC)."""
    conditions = _conditions(fields, filter_ if isinstance(filter_, dict) else {})
    matched = [row for row in rows if all(_match(row, *c) for c in conditions)]
    order = order if isinstance(order, dict) and order else {"ID": "ASC"}
    for name, direction in reversed(list(order.items())):
        name = str(name).upper()
        if name in fields:
            kind = _kind(fields[name])
            descending = str(direction).upper() == "DESC"
            matched.sort(key=lambda r, n=name, k=kind: _sort_key(r.get(n), k), reverse=descending)
    return matched


def _kind(spec: Field) -> str:
    """How values compare: as numbers, as moments in time (ISO 8601 with any offset), or as text."""
    return "number" if spec.type in _NUMERIC else "datetime" if spec.type == "datetime" else "text"


def _conditions(fields: dict[str, Field], filter_: dict[str, Any]) -> list[tuple[str, str, Any, str]]:
    """(operator, field, value, kind); unknown fields are dropped silently, like the portal does."""
    result = []
    for key, value in filter_.items():
        found = _KEY.match(str(key))
        if not found:
            continue
        op, name = found.group(1) or "=", found.group(2)
        if name in fields:
            result.append((op, name, value, _kind(fields[name])))
    return result


def _match(row: dict[str, Any], op: str, name: str, expected: Any, kind: str) -> bool:
    actual = [e["VALUE"] for e in row.get(name) or []] if name in MULTI_FIELDS else [row.get(name)]
    if name == "CONTACT_IDS":
        actual = list(row.get(name) or [])
    wanted = list(expected.values()) if isinstance(expected, dict) else expected
    wanted = [str(w) for w in wanted] if isinstance(wanted, list) else [str(wanted)]
    if op in ("=", "@"):
        return any(_equal(a, w, kind == "number") for a in actual for w in wanted)
    if op in ("!", "!=", "!@"):
        return not any(_equal(a, w, kind == "number") for a in actual for w in wanted)
    if op == "%":
        return any(w.lower() in str(a or "").lower() for a in actual for w in wanted)
    if op == "!%":
        return not any(w.lower() in str(a or "").lower() for a in actual for w in wanted)
    return any(_compare(a, op, w, kind) for a in actual for w in wanted)


def _equal(actual: Any, wanted: str, numeric: bool) -> bool:
    if actual is None:
        return wanted == ""
    if numeric:
        try:
            return float(actual) == float(wanted)
        except ValueError:
            return False
    return str(actual) == wanted


def _compare(actual: Any, op: str, wanted: str, kind: str) -> bool:
    if actual is None:
        return False
    left: Any
    right: Any
    try:
        if kind == "datetime":
            left, right = _moment(actual), _moment(wanted)
        else:
            left, right = (float(actual), float(wanted)) if kind == "number" else (str(actual), wanted)
    except (TypeError, ValueError):
        return False
    return {">": left > right, "<": left < right, ">=": left >= right, "<=": left <= right}[op]


def _moment(value: Any) -> float:
    """An ISO 8601 date-time as a POSIX time (without an offset: the portal's local time); ValueError if unreadable."""
    parsed = datetime.fromisoformat(str(value).strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.now().astimezone().tzinfo)
    return parsed.timestamp()


def _sort_key(value: Any, kind: str) -> tuple[int, Any]:
    numeric = kind != "text"
    if value is None:
        return (0, 0 if numeric else "")
    if kind == "datetime":
        try:
            return (1, _moment(value))
        except ValueError:
            return (0, 0)
    if numeric:
        try:
            return (1, float(value))
        except ValueError:
            return (0, 0)
    return (1, str(value).lower())
