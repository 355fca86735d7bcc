"""The HTTP layer: a threading server on 127.0.0.1 that hands each request to a pipeline and can drop connections."""

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from integrations.sandbox.http import TrackingHandler, TrackingServer, hard_close


@dataclass
class Reply:
    """What to send back; drop=True closes the connection without any response (after waiting `delay` seconds)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay: float = 0.0


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return Reply(status=status, body=body, headers=headers or {})


Pipeline = Callable[[str, str, str, bytes, str], Reply]  # verb, path, content type, body, X-Request-Id


class SandboxHTTPServer(TrackingServer):
    allow_reuse_address = True

    def __init__(self, port: int, pipeline: Pipeline, stopping: threading.Event):
        self.pipeline = pipeline
        self.stopping = stopping
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(TrackingHandler):
    server_version = "nginx"  # like the real portal behind nginx
    sys_version = ""
    server: SandboxHTTPServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if self.server.stopping.is_set():
            self.close_connection = True
            return
        try:
            content_type, request_id = self.headers.get("Content-Type", ""), self.headers.get("X-Request-Id", "")
            reply = self.server.pipeline(self.command, self.path, content_type, body, request_id)
        except Exception as exc:  # noqa: BLE001 - a sandbox bug should read as a portal 500, not a dropped socket
            reply = json_reply(500, {"error": "INTERNAL_SERVER_ERROR", "error_description": type(exc).__name__})
        if reply.drop:
            if reply.delay:
                self.server.stopping.wait(reply.delay)  # stop() interrupts a simulated hang
            self.close_connection = True
            hard_close(self.connection)
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence stderr access logs; the sandbox keeps its own request log."""
