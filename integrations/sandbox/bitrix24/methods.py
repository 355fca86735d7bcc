"""The emulated REST methods (crm.deal.*, crm.contact.*, batch, profile, event.*), independent of HTTP."""

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from .events import EventRegistry
from .fields import describe
from .params import parse_bracket_pairs
from .store import CrmStore, NotFound

MAX_BATCH = 50
OPERATING_WINDOW = 600  # seconds; the per-method operating budget resets every 10 minutes
_REFERENCE = re.compile(r"\$result\[([^\]]+)\]((?:\[[^\]]*\])*)")


@dataclass
class Outcome:
    """HTTP status plus JSON body (without the `time` block, which the caller adds)."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return "error" not in self.body


def error(status: int, code: str, description: str) -> Outcome:
    return Outcome(status, {"error": code, "error_description": description})


def time_block(started: float, operating: float = 0.0) -> dict[str, Any]:
    """The `time` object every Bitrix response carries."""
    finished = time.time()
    return {
        "start": started,
        "finish": finished,
        "duration": finished - started,
        "processing": finished - started,
        "date_start": _iso(started),
        "date_finish": _iso(finished),
        "operating_reset_at": int(started) + OPERATING_WINDOW,
        "operating": operating,
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).astimezone().isoformat(timespec="seconds")


def php_map(mapping: dict[str, Any]) -> dict[str, Any] | list[Any]:
    """PHP json_encode: an empty array is [], keys 0..n-1 make a list."""
    if list(mapping) == [str(i) for i in range(len(mapping))]:
        return list(mapping.values())
    return mapping


class Methods:
    """Dispatches a method name (case-insensitive) with parsed params to an Outcome."""

    def __init__(self, store: CrmStore, events: EventRegistry, user_id: int):
        self.store = store
        self.events = events
        self.user_id = user_id

    def call(self, method: str, params: dict[str, Any]) -> Outcome:
        name = method.lower()
        if name == "batch":
            return self.batch(params)
        entity_method = re.fullmatch(r"crm\.(deal|contact)\.(add|update|get|list|delete|fields)", name)
        if entity_method:
            return self._crm(entity_method.group(1), entity_method.group(2), params)
        if name == "profile":
            return Outcome(200, {"result": self._profile()})
        if name in ("event.bind", "event.unbind", "event.get"):
            return self._event(name, params)
        return error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")

    def _crm(self, entity: str, action: str, params: dict[str, Any]) -> Outcome:
        fields = params.get("fields")
        fields = fields if isinstance(fields, dict) else {}
        if action == "add":
            return Outcome(200, {"result": self.store.add(entity, fields)})
        if action == "fields":
            return Outcome(200, {"result": describe(self.store.fields(entity))})
        if action == "list":
            rows, total, next_ = self.store.list(entity, params)
            body: dict[str, Any] = {"result": rows}
            if next_ is not None:
                body["next"] = next_
            if total is not None:
                body["total"] = total
            return Outcome(200, body)
        record_id = str(params.get("id", "")).strip()
        if not record_id.isdigit() or int(record_id) <= 0:
            return error(400, "", "ID is not defined or invalid.")
        try:
            if action == "get":
                return Outcome(200, {"result": self.store.get(entity, record_id)})
            if action == "update":
                self.store.update(entity, record_id, fields)
            else:
                self.store.delete(entity, record_id)
        except NotFound:
            return error(400, "", "Not found")
        return Outcome(200, {"result": True})

    def _profile(self) -> dict[str, Any]:
        return {
            "ID": str(self.user_id),
            "ADMIN": True,
            "NAME": "Sandbox",
            "LAST_NAME": "User",
            "PERSONAL_GENDER": "",
            "TIME_ZONE": "",
            "TIME_ZONE_OFFSET": 0,
        }

    def _event(self, name: str, params: dict[str, Any]) -> Outcome:
        if name == "event.get":
            return Outcome(200, {"result": self.events.describe()})
        event, handler = str(params.get("event") or "").upper(), str(params.get("handler") or "")
        if not event or (name == "event.bind" and not handler):
            return error(400, "ERROR_ARGUMENT", "Argument 'event' and 'handler' are required")
        if name == "event.unbind":
            return Outcome(200, {"result": {"count": self.events.unbind(event, handler or None)}})
        if self.events.bind(event, handler) is None:
            return error(400, "ERROR_CORE", "Handler already binded")
        return Outcome(200, {"result": True})

    def batch(self, params: dict[str, Any]) -> Outcome:
        """Run cmd[key]="method?query" in order, substituting $result[key][FIELD] references from earlier ones."""
        commands = params.get("cmd") or {}
        if isinstance(commands, list):
            commands = {str(i): c for i, c in enumerate(commands)}
        if not isinstance(commands, dict):
            return error(400, "INVALID_ARG_VALUE", "cmd must be an array")
        if len(commands) > MAX_BATCH:
            return error(400, "ERROR_BATCH_LENGTH_EXCEEDED", f"Max batch length exceeded ({MAX_BATCH})")
        halt = str(params.get("halt", "0")).lower() in ("1", "true", "y")
        out: dict[str, dict[str, Any]] = {k: {} for k in ("result", "error", "total", "next", "time")}
        for key, command in commands.items():
            started = time.time()
            outcome = self._batch_command(str(command), out["result"])
            if outcome.ok:
                out["result"][key] = outcome.body["result"]
                for extra in ("total", "next"):
                    if extra in outcome.body:
                        out[extra][key] = outcome.body[extra]
                out["time"][key] = time_block(started)
            else:
                out["error"][key] = outcome.body
                if halt:
                    break
        return Outcome(
            200,
            {
                "result": {
                    "result": php_map(out["result"]),
                    "result_error": php_map(out["error"]),
                    "result_total": php_map(out["total"]),
                    "result_next": php_map(out["next"]),
                    "result_time": php_map(out["time"]),
                }
            },
        )

    def _batch_command(self, command: str, results: dict[str, Any]) -> Outcome:
        method, _, query = command.partition("?")
        if method.strip().lower() == "batch":
            return error(400, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")
        pairs = [(k, _substitute(v, results)) for k, v in parse_qsl(query, keep_blank_values=True)]
        params = {k.lower(): v for k, v in parse_bracket_pairs(pairs).items()}
        return self.call(method.strip(), params)


def _substitute(value: str, results: dict[str, Any]) -> str:
    """Replace $result[key][A][B] with the earlier command's value; unresolved references are left as typed."""

    def replace(found: re.Match[str]) -> str:
        node: Any = results
        for part in [found.group(1), *re.findall(r"\[([^\]]*)\]", found.group(2))]:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return found.group(0)
        if isinstance(node, dict | list):
            return found.group(0)
        if isinstance(node, bool):
            return "1" if node else ""
        return "" if node is None else str(node)

    return _REFERENCE.sub(replace, value)
