"""The target interface: a target receives claimed syncs and returns one Outcome per sync."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from integrations.clients.http import HttpResult
from integrations.models import Integration, IntegrationSync
from integrations.policy import Verdict

if TYPE_CHECKING:
    from integrations.lease import RoundLease


@dataclass
class Claimed:
    """A claimed row plus, for coalescing targets, the later pending updates folded into it."""

    sync: IntegrationSync
    data: dict  # the state to deliver: the latest snapshot among sync + followers
    followers: list[int] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.sync.pk


@dataclass
class Outcome:
    verdict: Verdict
    remote_id: str = ""
    retry_after: float | None = None
    error: str = ""
    http: HttpResult | None = None
    request_summary: str = ""
    link_state: dict | None = None  # what to keep on the ExternalLink (e.g. multi-field entry ids)
    skip: bool = False  # the event needs no delivery (e.g. nothing to do remotely); recorded as skipped
    disable_integration: str = ""  # e.g. n8n 410 Gone


class Target(Protocol):
    coalesces: bool

    def worst_call_seconds(self) -> float:
        """How long one request can take at most (connect + read timeout): the lease must outlast it."""
        ...

    def deliver(self, integration: Integration, claimed: list[Claimed], lease: "RoundLease") -> dict[int, Outcome]:
        """One outcome per claimed row; `lease.ensure(worst_call_seconds())` before each request. A row the target
        did not send because the round stopped (LeaseLost) gets a DEFERRED outcome: released, no attempt used."""
        ...
