"""n8n target (event stream): every event, one signed POST each, in order per object."""

import json
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from django.conf import settings
from django.utils import timezone

from integrations import payloads, policy
from integrations.clients.n8n import N8nClient
from integrations.errors import ConfigurationError
from integrations.lease import LeaseLost, RoundLease
from integrations.models import Integration
from integrations.policy import Verdict
from integrations.targets.base import Claimed, Outcome

log = logging.getLogger("integrations.worker")
# Shown to operators (last_error, attempts, dashboard) when n8n answers 401/403: almost always a secret mismatch.
SIGNATURE_REFUSED_HINT = (
    "n8n refused the request; check the signing secret: the n8n flow must verify with this integration's current "
    "secret (admin → Integrations; after a rotation, copy the new one to n8n)"
)


class N8nTarget:
    coalesces = False  # every event matters to n8n flows (e.g. one Slack post per status change)

    def __init__(self, client: N8nClient | None = None):
        self.client = client or N8nClient()

    def worst_call_seconds(self) -> float:
        return float(sum(settings.N8N_TIMEOUT))

    def deliver(self, integration: Integration, claimed: list[Claimed], lease: RoundLease) -> dict[int, Outcome]:
        secrets = active_secrets(integration)
        if not secrets:
            raise ConfigurationError("no signing secret configured for this n8n integration (set one in the admin)")
        # A claimed batch holds at most one row per object (head of line), so its POSTs may run side by side, up to
        # N8N_CONCURRENCY at once. Each POST starts only when a slot is free and the lease outlasts it (checked here,
        # in the round's own thread and DB connection), so no event of this round is still in flight once the lease
        # has ended and the object's next event may go out from another worker.
        workers = max(1, min(settings.N8N_CONCURRENCY, len(claimed)))
        slots, gone = threading.Semaphore(workers), threading.Event()
        worst = self.worst_call_seconds()
        sent: dict[int, Future] = {}
        stopped = ""
        misconfigured: list[ConfigurationError] = []

        def deliver_one(item: Claimed) -> Outcome | None:
            try:
                outcome = self._deliver_one(integration, item, secrets)
            except ConfigurationError as exc:  # not sent: the round stops, the dispatcher pauses
                misconfigured.append(exc)
                gone.set()
                return None
            finally:
                slots.release()
            if outcome.disable_integration:
                gone.set()
            return outcome

        with ThreadPoolExecutor(workers, thread_name_prefix="n8n") as pool:
            for item in claimed:
                slots.acquire()
                if gone.is_set():  # 410 seen or a secret unusable: not sent
                    break
                try:
                    lease.ensure(worst)
                except LeaseLost as exc:
                    stopped = str(exc)
                    break
                sent[item.id] = pool.submit(deliver_one, item)
        outcomes = {pk: future.result() for pk, future in sent.items()}
        outcomes = {pk: outcome for pk, outcome in outcomes.items() if outcome is not None}
        if misconfigured:  # the dispatcher pauses; the POSTs already answered keep their outcomes
            raise ConfigurationError(str(misconfigured[0]), outcomes=outcomes)
        if stopped:  # released at once: nothing of these objects is in flight
            release = Outcome(verdict=Verdict.DEFERRED, error=stopped)
            outcomes.update({item.id: release for item in claimed if item.id not in sent})
        return outcomes

    def _deliver_one(self, integration: Integration, item: Claimed, secrets: list[str]) -> Outcome:
        sync = item.sync
        body = payloads.n8n_event(
            event_id=str(sync.event_id),
            object_type=sync.content_type.model,
            event_type=sync.event_type,
            object_id=sync.object_id,
            sequence=sync.sequence,
            occurred_at=sync.occurred_at,
            data=item.data,
            changes=sync.changes,
            backfill=sync.backfill,
        )
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        result = self.client.post_event(
            integration.endpoint, secrets=secrets, event_id=str(sync.event_id), body=raw, timeout=settings.N8N_TIMEOUT
        )
        summary = f"POST n8n {body['type']} id={sync.event_id} seq={sync.sequence} bytes={len(raw)}"
        log.info("[WORKER] n8n sync=%s %s → %s", sync.pk, body["type"], result.status or result.error_class)
        if result.status == 410:
            return Outcome(
                verdict=Verdict.TERMINAL,
                http=result,
                request_summary=summary,
                error="410 Gone: endpoint removed, integration disabled",
                disable_integration="n8n answered 410 Gone",
            )
        verdict = policy.classify_http(result.status, maybe_applied=result.maybe_applied)
        if verdict == Verdict.UNKNOWN:
            verdict = Verdict.RETRYABLE  # receivers dedupe on webhook-id, so resending is safe
        error = "" if verdict == Verdict.OK else (result.error or f"HTTP {result.status}: {result.excerpt[:200]}")
        if result.status in (401, 403):  # first, so the hint survives every truncated display of the error
            error = f"HTTP {result.status}: {SIGNATURE_REFUSED_HINT}. Response: {result.excerpt[:200]}"
        return Outcome(
            verdict=verdict,
            http=result,
            request_summary=summary,
            error=error,
            retry_after=policy.parse_retry_after(result.headers.get("retry-after")),
        )


def active_secrets(integration: Integration) -> list[str]:
    """The current secret, plus the previous one while its rotation grace period lasts (two signatures)."""
    secrets = [integration.secret] if integration.secret else []
    if integration.previous_secret and integration.previous_secret_expires_at:
        if integration.previous_secret_expires_at > timezone.now():
            secrets.append(integration.previous_secret)
    return secrets
