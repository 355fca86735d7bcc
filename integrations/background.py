"""Broker messages sent from a daemon thread after commit, so a request never waits on the broker.

The rows are committed before their ids (or their integration's id) get here, and every kind of row this sends for
has a sweep that finds rows whose message never came (a broker outage, a process killed with ids still queued):
sending later, or not at all, only delays. What the thread buys: the web request answers as soon as its row is
durable, whether the broker is up, down or hung, and ids that pile up while a message is being sent leave together in
the next one, so a burst costs a few messages instead of one per row.
"""

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger("integrations.background")


class BackgroundSender:
    """Collects ids from any thread; one daemon thread per process hands them to `send` in batches of `max_batch`."""

    def __init__(
        self,
        name: str,
        send: Callable[[list[int]], None],
        *,
        max_batch: int = 500,
        linger: float = 0.0,
        coalesce: bool = False,
    ):
        """`linger`: how long the thread waits after the first id for more to send with it (seconds).
        `coalesce`: an id already waiting is not queued again, so an id waits at most once (and the queue holds each
        id at most once while `send` is stuck on a broker outage)."""
        self.name, self.send, self.max_batch, self.linger = name, send, max_batch, linger
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._outstanding = 0  # submitted and not yet through `send`
        self._waiting: set[int] | None = set() if coalesce else None  # ids queued and not yet taken for a send
        atexit.register(self.flush, 2.0)
        os.register_at_fork(after_in_child=self._forget_parent)

    def _forget_parent(self) -> None:
        """A forked child has none of the parent's threads, and the lock may have been held at the fork."""
        self._lock, self._pid = threading.Lock(), None

    def submit(self, ids: list[int]) -> None:
        self._ensure_thread()
        with self._lock:
            if self._waiting is not None:
                ids = [i for i in dict.fromkeys(ids) if i not in self._waiting]
                self._waiting.update(ids)
            self._outstanding += len(ids)
        for i in ids:
            self._queue.put(i)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every submitted id was handed to `send` (tests, process exit); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._outstanding:
            if self._pid != os.getpid() or time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            # First use in this process (or in a child forked after the parent started its thread, which the child
            # does not have): a fresh queue, because ids queued in the parent are the parent's to send.
            self._queue, self._outstanding = queue.SimpleQueue(), 0
            if self._waiting is not None:
                self._waiting = set()
            threading.Thread(target=self._run, args=(self._queue,), name=self.name, daemon=True).start()
            self._pid = os.getpid()

    def _run(self, pending: "queue.SimpleQueue[int]") -> None:
        while True:
            ids = [pending.get()]
            try:
                until = time.monotonic() + self.linger
                while len(ids) < self.max_batch:
                    try:
                        remaining = until - time.monotonic()
                        ids.append(pending.get(timeout=remaining) if remaining > 0 else pending.get_nowait())
                    except queue.Empty:
                        break
                if self._waiting is not None:
                    # Taken before the send starts: an id submitted from now on may follow a change this send
                    # will not see, so it is queued again.
                    with self._lock:
                        self._waiting.difference_update(ids)
                self.send(ids)
            except Exception:  # noqa: BLE001 - the thread must survive anything; the sweep covers what was lost
                log.exception("[QUEUE] %s: %s ids not sent; the sweep will find them", self.name, len(ids))
            finally:
                with self._lock:
                    self._outstanding -= len(ids)
