"""The HTTP server both sandboxes share: keep-alive like the real services, and a stop() that cuts idle clients off."""

import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class TrackingServer(ThreadingHTTPServer):
    """Tracks open connections so close_all() can cut keep-alive clients off instead of serving them from a dead
    sandbox (a pooled client would otherwise keep talking to the handler thread of a stopped server)."""

    daemon_threads = True
    request_queue_size = 128  # benchmarks open many connections at once

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup for server_name; loopback needs none.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def close_all(self) -> None:
        with self.connections_lock:
            for conn in list(self.connections):
                hard_close(conn)
            self.connections.clear()


class TrackingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every reply carries Content-Length
    timeout = 120  # idle keep-alive connections give their thread back eventually
    # Headers and body go out in separate writes; with Nagle's algorithm on, a keep-alive client's delayed ACK would
    # hold the body back ~40 ms per request.
    disable_nagle_algorithm = True
    server: TrackingServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)


def hard_close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
