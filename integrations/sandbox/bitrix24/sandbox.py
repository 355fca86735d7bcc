"""BitrixSandbox: a Bitrix24 portal emulator on 127.0.0.1 (webhook auth, rate limit, faults, outbound events)."""

import hmac
import json
import re
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from integrations.clients.http import HttpResult

from .events import DEFAULT_HANDLER_IDS, EventDispatcher, EventRegistry, robot_call
from .faults import FaultInjector, LeakyBucket
from .methods import Methods, time_block
from .params import BadRequest, parse_request
from .server import Reply, SandboxHTTPServer, json_reply
from .store import CrmStore

_SUFFIX = re.compile(r"\.(json|xml)$", re.I)
_HTML_500 = (
    b"<html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1></body></html>"
)


class BitrixSandbox:
    """In-memory portal served over real HTTP; all state is thread-safe and inspectable from tests."""

    def __init__(
        self,
        port: int = 0,
        user_id: int = 1,
        code: str | None = None,
        rate: float = 2.0,
        burst: int = 50,
        enforce_rate_limit: bool = True,
        event_handler_url: str | None = None,
        log_limit: int = 10_000,
    ):
        self.user_id = user_id
        self.code = code or secrets.token_hex(8)
        self.enforce_rate_limit = enforce_rate_limit
        self.event_handler_url = event_handler_url
        # While True, changes post no event at all (our web down, a handler removed): only catch-up can see them.
        self.events_paused = False
        self.application_token = secrets.token_hex(16)
        self.member_id = secrets.token_hex(16)
        self.operation_reset_seconds = 5  # how far ahead operating_reset_at lies on an OPERATION_TIME_LIMIT fault
        self._port = port
        self._lock = threading.Lock()
        self._log: deque[dict[str, Any]] = deque(maxlen=log_limit)
        self._local = threading.local()  # the request being handled on this server thread (its X-Request-Id)
        self.stats: Counter[str] = Counter()
        self.store = CrmStore(user_id, on_change=self._on_change)
        self.registry = EventRegistry()
        self.methods = Methods(self.store, self.registry, user_id)
        self.faults = FaultInjector()
        self.bucket = LeakyBucket(rate, burst)
        self.dispatcher = EventDispatcher({})
        self._stopping = threading.Event()
        self._server: SandboxHTTPServer | None = None

    # Lifecycle

    def start(self) -> "BitrixSandbox":
        """Bind 127.0.0.1:<port> and serve from a daemon thread."""
        self._stopping.clear()
        self._server = SandboxHTTPServer(self._port, self.handle, self._stopping)
        self._port = self._server.server_address[1]
        self.dispatcher.auth = {
            "domain": f"127.0.0.1:{self._port}",
            "client_endpoint": f"http://127.0.0.1:{self._port}/rest/",
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "member_id": self.member_id,
            "application_token": self.application_token,
        }
        self.dispatcher.start()
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="bitrix-sandbox", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_all()
        self.dispatcher.stop()
        self._server = None

    def __enter__(self) -> "BitrixSandbox":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/rest/{self.user_id}/{self.code}/"

    # Test controls and inspection

    def set_faults(
        self,
        error_5xx: float = 0.0,
        timeout: float = 0.0,
        lost_response: float = 0.0,
        operation_limit: float = 0.0,
        seed: int | None = None,
        timeout_seconds: float | None = None,
        slow: float = 0.0,
        slow_seconds: float | None = None,
    ) -> None:
        """Replace fault probabilities; timeout_seconds is how long a 'timeout' request hangs before the drop,
        slow_seconds how long a 'slow' one is held before it is applied and answered."""
        self.faults.configure(
            error_5xx, timeout, lost_response, operation_limit, seed, timeout_seconds, slow, slow_seconds
        )

    def fail_next(self, n: int, kind: str) -> None:
        """Make the next n REST requests fail with kind (error_5xx, timeout, lost_response, operation_limit, slow)."""
        self.faults.fail_next(n, kind)

    def pause_events(self, paused: bool = True) -> None:
        """Stop (or resume) posting events: changes made meanwhile are counted in stats["events_dropped"], never sent
        later (Bitrix24 does not send a failed post again)."""
        self.events_paused = paused

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._log)

    @property
    def deals(self) -> dict[int, dict[str, Any]]:
        return self.store.snapshot("deal")

    @property
    def contacts(self) -> dict[int, dict[str, Any]]:
        return self.store.snapshot("contact")

    @property
    def events_sent(self) -> list[dict[str, Any]]:
        """Outbound event deliveries attempted so far (event, id, url, status)."""
        return list(self.dispatcher.deliveries)

    def wait_for_events(self, timeout: float = 5.0) -> bool:
        """Block until queued outbound events were posted."""
        return self.dispatcher.wait_idle(timeout)

    def state(self) -> dict[str, Any]:
        return {
            "deals": list(self.deals.values()),
            "contacts": list(self.contacts.values()),
            "stats": self._stats_copy(),
            "faults": self.faults.settings(),
            "bindings": self.registry.describe(),
        }

    def _stats_copy(self) -> dict[str, int]:
        with self._lock:
            return dict(self.stats)

    def reset(self) -> None:
        """Forget data, bindings, faults, the request log, stats and the rate-limit level."""
        self.store.reset()
        self.registry.clear()
        self.faults.clear()
        self.bucket.reset()
        self.events_paused = False
        with self._lock:
            self._log.clear()
            self.stats.clear()
        self.dispatcher.deliveries.clear()

    @staticmethod
    def robot_call(
        url: str, document_id: str = "DEAL_1", extra_query: Mapping[str, str] | str | None = None
    ) -> HttpResult:
        """Same as the module-level robot_call: POST like a business-process Webhook robot."""
        return robot_call(url, document_id, extra_query)

    # Request pipeline

    def handle(self, verb: str, raw_path: str, content_type: str, body: bytes, request_id: str = "") -> Reply:
        """Route one HTTP request: /sandbox/* controls, /rest/<user>/<code>/<method> portal calls."""
        self._local.request_id = request_id
        path, _, query = raw_path.partition("?")
        if path.startswith("/sandbox/"):
            return self._control(verb, path, body)
        if not path.startswith("/rest/"):
            return json_reply(404, {"error": "NOT_FOUND", "error_description": "Not found"})
        parts = path[len("/rest/") :].split("/")
        if len(parts) < 3:
            return self._finish("", "", 401, _err("NO_AUTH_FOUND", "Wrong authorization data"))
        user, code, method = parts[0], parts[1], _SUFFIX.sub("", "/".join(parts[2:])).lower()
        if user != str(self.user_id) or not hmac.compare_digest(code.encode(), self.code.encode()):
            self._bump("auth_failed")
            return self._finish(method, "", 401, _err("INVALID_CREDENTIALS", "Invalid request credentials"))
        if self.enforce_rate_limit and not self.bucket.admit():
            self._bump("rate_limited")
            return self._finish(method, "", 503, _err("QUERY_LIMIT_EXCEEDED", "Too many requests"))
        try:
            params = parse_request(query, content_type, body)
        except BadRequest as exc:
            return self._finish(method, "", 400, _err("INVALID_REQUEST", str(exc)))
        return self._portal_call(method, params)

    def _portal_call(self, method: str, params: dict[str, Any]) -> Reply:
        started, summary, fault = time.time(), _summarize(method, params), self.faults.draw()
        if fault:
            self._bump(f"fault_{fault}")
        if fault == "error_5xx":
            self._record(method, summary, 500, fault)
            return Reply(status=500, body=_HTML_500, content_type="text/html")
        if fault == "timeout":  # hangs, then closes without answering; nothing was applied
            self._record(method, summary, None, fault)
            return Reply(drop=True, delay=self.faults.timeout_seconds)
        if fault == "slow" and self._stopping.wait(self.faults.slow_seconds):
            return Reply(drop=True)  # stopped while holding the request
        if fault == "operation_limit":
            block = time_block(started, operating=480.0)
            block["operating_reset_at"] = int(started + self.operation_reset_seconds)
            payload = {**_err("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit."), "time": block}
            return self._finish(method, summary, 429, payload, fault)
        outcome = self.methods.call(method, params)
        if fault == "lost_response":  # applied, but the answer never leaves the server
            self._record(method, summary, None, fault)
            return Reply(drop=True)
        payload = {**outcome.body, "time": time_block(started)} if outcome.ok else outcome.body
        return self._finish(method, summary, outcome.status, payload, fault)  # fault: '' or 'slow' here

    def _finish(self, method: str, summary: str, status: int, payload: dict[str, Any], fault: str = "") -> Reply:
        self._record(method, summary, status, fault)
        return json_reply(status, payload)

    def _bump(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _record(self, method: str, summary: str, status: int | None, fault: str) -> None:
        with self._lock:
            self.stats["requests"] += 1
            self._log.append(
                {
                    "ts": time.time(),
                    "method": method,
                    "params": summary,
                    "status": status,
                    "fault": fault,
                    "request_id": getattr(self._local, "request_id", ""),
                }
            )

    def _control(self, verb: str, path: str, body: bytes) -> Reply:
        try:
            if verb == "GET" and path == "/sandbox/requests":
                return json_reply(200, self.requests)
            if verb == "GET" and path == "/sandbox/state":
                return json_reply(200, self.state())
            if verb == "GET" and path == "/sandbox/faults":
                return json_reply(200, self.faults.settings())
            if verb == "POST" and path == "/sandbox/faults":
                options = json.loads(body or b"{}")
                forced = options.pop("fail_next", None)
                self.set_faults(**options)
                if forced:
                    self.fail_next(int(forced["n"]), str(forced["kind"]))
                return json_reply(200, self.faults.settings())
            if verb == "POST" and path == "/sandbox/events":
                self.pause_events(bool(json.loads(body or b"{}").get("paused")))
                return json_reply(200, {"paused": self.events_paused})
            if verb == "POST" and path == "/sandbox/reset":
                self.reset()
                return json_reply(200, {"ok": True})
        except (ValueError, TypeError, KeyError) as exc:
            return json_reply(400, {"error": f"{type(exc).__name__}: {exc}"})
        return json_reply(404, {"error": "unknown sandbox endpoint"})

    def _on_change(self, event: str, record_id: int) -> None:
        if self.events_paused:
            self._bump("events_dropped")
            return
        targets = self.registry.targets(event)
        default = self.event_handler_url
        if default and event in DEFAULT_HANDLER_IDS and default not in {url for url, _ in targets}:
            targets.append((default, DEFAULT_HANDLER_IDS[event]))
        for url, handler_id in targets:
            self.dispatcher.enqueue(url, handler_id, event, record_id)


def _err(code: str, description: str) -> dict[str, str]:
    return {"error": code, "error_description": description}


def _summarize(method: str, params: dict[str, Any]) -> str:
    """A short, loggable view of the parameters (batch: key=method per command)."""
    if method == "batch" and isinstance(params.get("cmd"), dict | list):
        cmd = params["cmd"]
        items = cmd.items() if isinstance(cmd, dict) else enumerate(cmd)
        text = "cmd: " + ", ".join(f"{k}={str(v).partition('?')[0]}" for k, v in items)
    else:
        text = json.dumps(params, ensure_ascii=False, default=str)
    return text[:300]
