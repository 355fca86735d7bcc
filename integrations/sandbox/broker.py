"""Broker outages on 127.0.0.1 for tests and benchmarks: a port nothing listens on, a server that accepts TCP and
never answers, and pointing this process's Celery producers at either."""

import socket
import threading
from contextlib import contextmanager


def closed_port_url(db: int = 0) -> str:
    """A redis:// URL on a port that was just free: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/{db}"


class HungBroker:
    """Accepts every connection and never reads or answers, like a broker stuck in a long stall."""

    def __init__(self):
        self._server = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._server.settimeout(0.1)
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="hung-broker", daemon=True)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self._server.getsockname()[1]}/{db}"

    def start(self) -> "HungBroker":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with self._lock:
            held, self._held = self._held, []
        for conn in held:
            conn.close()
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._server.accept()[0]
            except OSError:
                continue
            with self._lock:
                self._held.append(conn)


@contextmanager
def celery_broker(url: str):
    """Point this process's Celery producers at `url`; the previous broker is back on exit. Set as the write URL,
    which publishing uses: the CELERY_BROKER_URL environment variable (set for the bench) outranks conf.broker_url."""
    from app.celery import app

    def reset_pools():  # drop references only: kombu's global producer registry may still share the old pools
        app._pool = None
        app.amqp._producer_pool = None

    previous = app.conf.get("broker_write_url")
    reset_pools()
    app.conf.broker_write_url = url
    try:
        yield app
    finally:
        app.conf.broker_write_url = previous
        reset_pools()
