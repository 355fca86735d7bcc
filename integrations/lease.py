"""A delivery round's lease: a request goes out only while the lease outlasts that request's worst case.

A round makes several calls one after another; the claim's lease alone would cover the first ones only. Before each
call the target asks `ensure(worst)`: when the lease (as this process counts it, from before the claim or the last
renewal) would end within the call's worst case plus the margin, the rows still held by the round's claim token get
a fresh lease in the database. Rows another worker took over stop the round (`LeaseLost`): nothing more is sent, and
the target releases what it has not sent."""

import logging
import threading
import time
from collections.abc import Iterable

from django.db import DatabaseError

from integrations import policy, services

log = logging.getLogger("integrations.worker")


class LeaseLost(Exception):
    """The round may not send anything more; the message says why (it ends up on the released rows)."""


class RoundLease:
    """The lease of one claimed round. `started` is time.monotonic() taken before the claim statement ran, so the
    local deadline is never later than the one the database holds (both clocks run at the same rate)."""

    def __init__(self, *, ids: Iterable[int], token, seconds: float, started: float):
        self.ids, self.token, self.seconds = list(ids), token, float(seconds)
        self.margin = policy.lease_margin(self.seconds)
        self._deadline = started + self.seconds
        self._lock = threading.Lock()
        self._lost = ""

    def ensure(self, worst: float) -> None:
        """Return when a call starting now and lasting up to `worst` seconds ends inside the lease (with the margin);
        renews the lease when needed. Raises LeaseLost when the round has to stop instead."""
        with self._lock:
            if self._lost:
                raise LeaseLost(self._lost)
            if time.monotonic() + worst + self.margin <= self._deadline:
                return
            if worst + self.margin > self.seconds:
                raise self._stopped(f"not sent: a lease of {self.seconds:g} s cannot cover a call of up to {worst:g} s")
            asked = time.monotonic()
            try:
                held = services.sync_lease_extend(ids=self.ids, token=self.token, seconds=self.seconds)
            except DatabaseError as exc:
                raise self._stopped(f"not sent: the lease could not be renewed ({type(exc).__name__})") from exc
            if len(held) < len(self.ids):
                raise self._stopped(
                    f"not sent: {len(self.ids) - len(held)} of the round's {len(self.ids)} rows were taken over "
                    "after its lease expired; the round stopped"
                )
            self._deadline = asked + self.seconds

    def _stopped(self, reason: str) -> LeaseLost:
        self._lost = reason
        log.warning("[WORKER] round %s stopped: %s", self.token, reason)
        return LeaseLost(reason)
