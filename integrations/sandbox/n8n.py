"""An n8n-like webhook receiver on 127.0.0.1 for tests, the demo and benchmarks.

It verifies Standard Webhooks signatures, dedupes by webhook-id and answers as programmed.
"""

import inspect
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from integrations.clients.n8n import _key, verify
from integrations.sandbox.http import TrackingHandler, TrackingServer

Match = Callable[[Any], bool]
OK_BODY = {"ok": True}


@dataclass(frozen=True)
class ReceivedEvent:
    """One delivery as the receiver saw it and what it answered."""

    received_at: float
    webhook_id: str
    webhook_timestamp: int | None
    body: Any
    signature_valid: bool | None  # None when the receiver has no secret and does not check
    status: int
    duplicate: bool = False
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""  # the exact bytes received, for independent signature checks

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("raw")  # JSON views show the parsed body
        return data


@dataclass
class _Rule:
    status: int
    times: int | None
    match: Match | None
    body: Any
    headers: dict[str, str]

    def applies(self, body: Any) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        try:
            return self.match is None or bool(self.match(body))
        except Exception:  # a predicate that cannot read this body simply does not match it
            return False


def _subset(expected: Any, actual: Any) -> bool:
    """True when every key of expected (recursively) has the same value in actual; used for JSON-programmed matches."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _subset(v, actual[k]) for k, v in expected.items())
    return expected == actual or str(expected) == str(actual)


class N8nReceiver:
    """Real-HTTP webhook endpoint that records Standard Webhooks deliveries; all methods are thread-safe."""

    def __init__(self, secret: str | list[str] | None = None, port: int = 0, path: str = "/webhook/shop"):
        self.secrets = [secret] if isinstance(secret, str) else list(secret or [])
        for s in self.secrets:
            _key(s)  # fail at construction, not on the first request
        self.path, self._port = path, port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: TrackingServer | None = None
        self.reset()

    # lifecycle
    def start(self) -> "N8nReceiver":
        """Bind and serve on a daemon thread; returns self."""
        server = TrackingServer(("127.0.0.1", self._port), _handler_for(self))
        self._server, self._stopping = server, threading.Event()
        # A short poll interval keeps stop() fast; tests start and stop many receivers.
        threading.Thread(target=server.serve_forever, args=(0.05,), name="n8n-receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving; delayed handlers are woken so they do not linger."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_all()  # keep-alive clients must not go on talking to a stopped receiver
            self._server = None

    def __enter__(self) -> "N8nReceiver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("N8nReceiver is not started.")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return self.base_url + self.path

    # programming
    def respond_with(
        self,
        status: int,
        times: int | None = None,
        match: Match | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer status to requests whose parsed body satisfies match, at most `times` times (None = forever)."""
        rule = _Rule(status, times, match, {"ok": 200 <= status < 300} if body is None else body, dict(headers or {}))
        with self._lock:
            self._rules.append(rule)

    def set_delay(self, seconds: float) -> None:
        with self._lock:
            self._delay = float(seconds)

    def set_secret(self, secret: str | list[str] | None) -> None:
        """Replace the accepted secrets (rotation tests)."""
        secrets = [secret] if isinstance(secret, str) else list(secret or [])
        for s in secrets:
            _key(s)
        with self._lock:
            self.secrets = secrets

    def reset(self) -> None:
        """Forget recorded requests, rules and delay."""
        with self._lock:
            self._rules: list[_Rule] = []
            self._delay = 0.0
            self._requests: list[ReceivedEvent] = []
            self._seen: set[str] = set()

    # inspection
    @property
    def requests(self) -> list[ReceivedEvent]:
        """Every POST to the webhook path, whatever was answered."""
        with self._lock:
            return list(self._requests)

    @property
    def events(self) -> list[ReceivedEvent]:
        """Accepted (2xx) deliveries, repeats included."""
        return [e for e in self.requests if e.accepted]

    @property
    def rejected(self) -> list[ReceivedEvent]:
        """Requests refused with 401 (bad signature) or 400 (not JSON)."""
        return [e for e in self.requests if e.reason]

    @property
    def duplicates(self) -> int:
        return sum(1 for e in self.events if e.duplicate)

    def unique_events(self) -> list[ReceivedEvent]:
        """First accepted delivery per webhook-id, in arrival order."""
        return [e for e in self.events if not e.duplicate]

    def events_for(self, object_type: str, object_id: Any) -> list[ReceivedEvent]:
        """Unique events about one object (payload `object: {type, id}`), in arrival order."""
        wanted = {"type": object_type, "id": object_id}
        return [e for e in self.unique_events() if isinstance(e.body, dict) and _subset(wanted, e.body.get("object"))]

    def wait_for(self, predicate: Callable[..., Any], timeout: float = 5.0) -> bool:
        """Poll predicate (no argument, or this receiver) until truthy; False on timeout."""
        takes_receiver = bool(inspect.signature(predicate).parameters)
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self) if takes_receiver else predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state for `GET /sandbox/events` and the demo page."""
        requests = self.requests
        return {
            "events": [e.as_dict() for e in requests if e.accepted],
            **self.summary(requests),
            "requests": [e.as_dict() for e in requests],
        }

    def summary(self, requests: list[ReceivedEvent] | None = None) -> dict[str, int]:
        """The counts alone, for `GET /sandbox/events?summary=1`."""
        requests = self.requests if requests is None else requests
        return {
            "received": len(requests),
            "unique": sum(1 for e in requests if e.accepted and not e.duplicate),
            "duplicates": sum(1 for e in requests if e.accepted and e.duplicate),
            "rejected": sum(1 for e in requests if e.reason),
        }

    # request handling
    def _receive(self, headers: dict[str, str], raw: bytes) -> tuple[int, Any, dict[str, str]]:
        """Verify, parse, apply delay and rules, record; returns (status, json body, extra headers)."""
        with self._lock:
            secrets, delay = list(self.secrets), self._delay
        valid = verify(secrets, headers, raw) if secrets else None
        stamp = headers.get("webhook-timestamp", "")
        base = {
            "webhook_id": headers.get("webhook-id", ""),
            "webhook_timestamp": int(stamp) if stamp.isdigit() else None,
            "signature_valid": valid,
            "headers": headers,
            "raw": raw,
        }
        if valid is False:
            return self._record(base, None, 401, "invalid signature")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._record(base, None, 400, "invalid JSON")
        if delay and self._stopping.wait(delay):
            return 503, {"ok": False}, {}
        return self._record(base, body, None, "")

    def _record(self, base: dict, body: Any, status: int | None, reason: str) -> tuple[int, Any, dict[str, str]]:
        answer, extra = ({"ok": False, "error": reason}, {})
        with self._lock:
            if status is None:
                status, answer, extra = 200, OK_BODY, {}
                for rule in self._rules:
                    if rule.applies(body):
                        if rule.times is not None:
                            rule.times -= 1
                        status, answer, extra = rule.status, rule.body, rule.headers
                        break
            duplicate = 200 <= status < 300 and base["webhook_id"] in self._seen
            if 200 <= status < 300:
                self._seen.add(base["webhook_id"])
            event = ReceivedEvent(time.time(), body=body, status=status, duplicate=duplicate, reason=reason, **base)
            self._requests.append(event)
        return status, answer, extra

    def _program(self, raw: bytes) -> tuple[int, Any]:
        """`POST /sandbox/respond` {"status": 500, "times": 3, "match": {"sequence": 2}}."""
        try:
            spec = json.loads(raw or b"{}")
            status = int(spec["status"])
        except (ValueError, KeyError, TypeError):
            return 400, {"ok": False, "error": "expected JSON with an integer 'status'"}
        expected = spec.get("match")
        match = (lambda body: _subset(expected, body)) if expected is not None else None
        self.respond_with(status, times=spec.get("times"), match=match, body=spec.get("body"))
        if "delay" in spec:
            self.set_delay(float(spec["delay"]))
        return 200, {"ok": True}


def _handler_for(receiver: N8nReceiver) -> type[TrackingHandler]:
    class Handler(TrackingHandler):
        server_version = "n8n-sandbox/1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            path = urlsplit(self.path).path
            if path == receiver.path:
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, answer, extra = receiver._receive(headers, raw)
                self._reply(status, answer, extra)
            elif path == "/sandbox/respond":
                self._reply(*receiver._program(raw))
            elif path == "/sandbox/reset":
                receiver.reset()
                self._reply(200, OK_BODY)
            else:
                self._reply(404, {"ok": False, "error": "not found"})

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/sandbox/events":
                summary = "summary=1" in url.query.split("&")  # counts only: cheap to poll while events pour in
                self._reply(200, receiver.summary() if summary else receiver.snapshot())
            else:
                self._reply(404, {"ok": False, "error": "not found"})

        def do_OPTIONS(self) -> None:  # CORS preflight from the demo page on another port
            self._reply(204, None)

        def _reply(self, status: int, answer: Any, extra: dict[str, str] | None = None) -> None:
            data = b"" if answer is None else json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("access-control-allow-origin", "*")
                self.send_header("access-control-allow-headers", "content-type")
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender gave up (read timeout); the delivery is already recorded, as in real life

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean; nothing here should reach logs anyway

    return Handler
