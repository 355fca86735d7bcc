"""Outbound event handlers (event.bind registry, background delivery) and the business-process Webhook robot call."""

import itertools
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from integrations.clients.http import HttpResult, TimeoutSession, send
from integrations.clients.params import flatten_params

CRM_EVENTS = tuple(f"ONCRM{e}{a}" for e in ("DEAL", "CONTACT") for a in ("ADD", "UPDATE", "DELETE"))
# The constructor's event_handler_url behaves as if bound to every CRM event with these fixed ids.
DEFAULT_HANDLER_IDS = {name: i + 1 for i, name in enumerate(CRM_EVENTS)}
_DOCUMENT_TYPES = {"DEAL": "CCrmDocumentDeal", "CONTACT": "CCrmDocumentContact", "LEAD": "CCrmDocumentLead"}


class EventRegistry:
    """Thread-safe event.bind bindings: (event, handler url) -> handler id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(100)
        self._bindings: dict[tuple[str, str], int] = {}

    def bind(self, event: str, handler: str) -> int | None:
        """Return the new handler id, or None when this pair is already bound."""
        with self._lock:
            if (event, handler) in self._bindings:
                return None
            self._bindings[(event, handler)] = next(self._ids)
            return self._bindings[(event, handler)]

    def unbind(self, event: str, handler: str | None) -> int:
        with self._lock:
            gone = [k for k in self._bindings if k[0] == event and handler in (None, k[1])]
            for k in gone:
                del self._bindings[k]
            return len(gone)

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"event": e, "handler": h, "auth_type": "0", "offline": 0} for e, h in self._bindings]

    def targets(self, event: str) -> list[tuple[str, int]]:
        with self._lock:
            return [(h, i) for (e, h), i in self._bindings.items() if e == event]

    def clear(self) -> None:
        with self._lock:
            self._bindings.clear()


class EventDispatcher:
    """Posts queued events from one daemon thread; failures are recorded, never retried (Bitrix does not retry)."""

    def __init__(self, auth: Mapping[str, str]):
        self.auth = dict(auth)
        self.deliveries: list[dict[str, Any]] = []
        self._queue: queue.Queue[tuple[str, str, int, int] | None] = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._session = TimeoutSession(2, 5)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bitrix-sandbox-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)

    def enqueue(self, url: str, handler_id: int, event: str, record_id: int) -> None:
        with self._cond:
            self._pending += 1
        self._queue.put((url, event, handler_id, record_id))

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until every queued event was attempted; True when idle."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            url, event, handler_id, record_id = item
            form = {
                "event": event,
                "event_handler_id": str(handler_id),
                "data": {"FIELDS": {"ID": str(record_id)}},
                "ts": str(int(time.time())),
                "auth": self.auth,
            }
            result = send(self._session, "POST", url, data=flatten_params(form))
            with self._cond:
                self.deliveries.append(
                    {"ts": time.time(), "event": event, "id": record_id, "url": url, "status": result.status}
                )
                self._pending -= 1
                self._cond.notify_all()


def robot_call(url: str, document_id: str = "DEAL_1", extra_query: Mapping[str, str] | str | None = None) -> HttpResult:
    """POST like the business-process Webhook robot: document_id[0..2] form fields, admin's params in the URL."""
    if extra_query:
        query = extra_query if isinstance(extra_query, str) else urlencode(dict(extra_query))
        url = f"{url}{'&' if '?' in url else '?'}{query}"
    kind = document_id.split("_", 1)[0].upper()
    form = [
        ("document_id[0]", "crm"),
        ("document_id[1]", _DOCUMENT_TYPES.get(kind, "CCrmDocument" + kind.title())),
        ("document_id[2]", document_id),
    ]
    return send(TimeoutSession(2, 5), "POST", url, data=form)
