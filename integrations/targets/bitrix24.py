"""Bitrix24 target (state sync): one contact per user, one deal per order, latest state, batched under the rate limit.

Deleting here: an order's deal is moved to the "cancelled" stage (sales history stays in the CRM); a user's contact
is left as it is. Both are documented in docs/bitrix24.md.
"""

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from integrations import payloads, policy
from integrations.clients.bitrix24 import BitrixClient, BitrixResponse
from integrations.errors import ConfigurationError
from integrations.inbound.echoes import stages_sent_note
from integrations.lease import LeaseLost, RoundLease
from integrations.models import AttemptOutcome, EventType, ExternalLink, Integration, SyncAttempt
from integrations.policy import Verdict
from integrations.targets.base import Claimed, Outcome
from integrations.targets.bitrix_limits import RateLimitTimeout, bitrix_client_for, call_worst_case

log = logging.getLogger("integrations.worker")
BATCH_SIZE = 50
CONTACT_WAIT = timedelta(minutes=10)  # after this a deal is created without its contact; the next update links it


@dataclass
class Plan:
    """What to do for one claimed row."""

    item: Claimed
    entity: str  # "contact" | "deal"
    link: ExternalLink | None
    needs_lookup: bool = False
    remote_id: str = ""
    outcome: Outcome | None = None
    state: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"s{self.item.id}"


class BitrixTarget:
    coalesces = True
    # Contacts and deals go in separate batch calls (deals need the contact ids), so a claim of two full batches
    # lets a mix of new users and new orders still fill each call with 50 commands.
    claim_limit = 2 * BATCH_SIZE

    def __init__(self, client_factory=None):
        self.client_factory = client_factory or _default_client

    def worst_call_seconds(self) -> float:
        return call_worst_case()

    def deliver(self, integration: Integration, claimed: list[Claimed], lease: RoundLease) -> dict[int, Outcome]:
        client = self.client_factory(integration)
        # The round's claim token names every request of this round (SyncAttempt.claim_token holds the same value).
        client.request_id = f"sync:{claimed[0].sync.claim_token}"
        # After the rate-limit wait, right before each request: no request goes out that the lease does not outlast.
        worst = self.worst_call_seconds()
        client.before_send = lambda: lease.ensure(worst)
        links = {
            (link.content_type_id, link.object_id): link
            for link in ExternalLink.objects.filter(
                integration=integration, object_id__in={c.sync.object_id for c in claimed}
            )
        }
        contacts = [self._plan(c, "contact", links) for c in claimed if c.sync.content_type.model == "user"]
        deals = [self._plan(c, "deal", links) for c in claimed if c.sync.content_type.model == "order"]
        _mark_lookups(contacts + deals)
        try:
            self._run(client, contacts, "crm.contact")
            self._attach_contacts(integration, deals, contacts)
            self._run(client, [d for d in deals if d.outcome is None], "crm.deal")
        except RateLimitTimeout as exc:
            _defer_unsent(contacts + deals, error=str(exc), retry_after=exc.wait)
        except LeaseLost as exc:  # the round stops: what it has not sent is released (not an attempt)
            _defer_unsent(contacts + deals, error=str(exc))
        except ConfigurationError as exc:  # the dispatcher pauses; what this round already obtained is kept
            exc.outcomes = {p.item.id: p.outcome for p in contacts + deals if p.outcome is not None}
            raise
        return {
            p.item.id: p.outcome or Outcome(verdict=Verdict.RETRYABLE, error="not attempted") for p in contacts + deals
        }

    # -- planning ---------------------------------------------------------------------------------------------
    def _plan(self, item: Claimed, entity: str, links: dict) -> Plan:
        link = links.get((item.sync.content_type_id, item.sync.object_id))
        plan = Plan(item=item, entity=entity, link=link, remote_id=link.remote_id if link else "")
        if item.sync.event_type == EventType.DELETED:
            if entity == "contact" or not link:
                plan.outcome = Outcome(verdict=Verdict.OK, skip=True, error=_deleted_note(entity, link))
        return plan

    def _attach_contacts(self, integration: Integration, deals: list[Plan], contacts: list[Plan]) -> None:
        fresh = {p.item.sync.object_id: p.remote_id for p in contacts if p.remote_id}
        user_ct = ContentType.objects.get(app_label="users", model="user")
        wanted = {str(p.item.data.get("user_id")) for p in deals} - set(fresh)
        linked = dict(
            ExternalLink.objects.filter(
                integration=integration, content_type=user_ct, object_id__in=wanted
            ).values_list("object_id", "remote_id")
        )
        for plan in deals:
            if plan.outcome is not None:
                continue
            user_id = str(plan.item.data.get("user_id"))
            plan.state["contact_id"] = fresh.get(user_id) or linked.get(user_id)
            if not plan.state["contact_id"] and not plan.link:
                if timezone.now() - plan.item.sync.occurred_at < CONTACT_WAIT:
                    _ensure_user_sync(integration, user_id)
                    plan.outcome = Outcome(
                        verdict=Verdict.DEFERRED, retry_after=2.0, error=f"waiting for contact of user {user_id}"
                    )

    # -- execution --------------------------------------------------------------------------------------------
    def _run(self, client: BitrixClient, plans: list[Plan], prefix: str) -> None:
        lookups = [p for p in plans if p.needs_lookup and p.outcome is None]
        self._batch(client, lookups, lambda p: {p.key: (f"{prefix}.list", _lookup_params(p))}, self._adopt)
        refresh = [p for p in plans if p.entity == "contact" and p.outcome is None and p.remote_id and not _has_ids(p)]
        self._batch(client, refresh, lambda p: {p.key: ("crm.contact.get", {"id": p.remote_id})}, self._keep_ids)
        writes = [p for p in plans if p.outcome is None]
        self._batch(client, writes, lambda p: self._write_commands(p, prefix), self._written, before=_note_stages)

    def _batch(self, client, plans: list[Plan], commands_of, on_result, before=None) -> None:
        for group, commands in _chunks(plans, commands_of):
            if before is not None:
                before(group)
            response = client.batch(commands)
            if not response.ok:
                _fail_all(group, response, summary=f"batch {len(commands)} cmds")
                continue
            for plan in group:
                on_result(plan, response)

    def _write_commands(self, plan: Plan, prefix: str) -> dict:
        data = plan.item.data
        originator = settings.BITRIX_ORIGINATOR_ID
        if plan.entity == "contact":
            existing = (plan.link.remote_state if plan.link else {}) if not plan.state.get("ids") else plan.state["ids"]
            fields = payloads.bitrix_contact_fields(
                data, originator=originator, existing=existing if plan.remote_id else None
            )
        else:
            fields = payloads.bitrix_deal_fields(
                data,
                originator=originator,
                stage_map=settings.BITRIX_STAGE_MAP,
                contact_id=plan.state.get("contact_id"),
            )
            if plan.item.sync.event_type == EventType.DELETED:
                fields = {"STAGE_ID": settings.BITRIX_STAGE_MAP.get("cancelled", "LOSE")}
        plan.state["fields"] = fields
        if plan.remote_id:
            commands = {plan.key: (f"{prefix}.update", {"id": plan.remote_id, "fields": fields})}
            if plan.entity == "contact":
                commands[f"g{plan.item.id}"] = ("crm.contact.get", {"id": plan.remote_id})
            return commands
        return {plan.key: (f"{prefix}.add", {"fields": fields, "params": {"REGISTER_SONET_EVENT": "N"}})}

    def _adopt(self, plan: Plan, response: BitrixResponse) -> None:
        if plan.key in response.errors:
            plan.outcome = _command_error(plan, response, "lookup")
            return
        found = response.results.get(plan.key) or []
        if found:
            plan.remote_id = str(sorted(int(r["ID"]) for r in found)[0])
            log.info(
                "[WORKER] sync=%s adopted existing %s %s found by ORIGIN_ID", plan.item.id, plan.entity, plan.remote_id
            )

    def _keep_ids(self, plan: Plan, response: BitrixResponse) -> None:
        entity = response.results.get(plan.key)
        if isinstance(entity, dict):
            plan.state["ids"] = payloads.multi_field_ids(entity)
        elif plan.key in response.errors:
            plan.outcome = _command_error(plan, response, "get")

    def _written(self, plan: Plan, response: BitrixResponse) -> None:
        sync = plan.item.sync
        action = "update" if plan.remote_id else "create"
        prefix = {"contact": "[QUEUE_CONTACT", "deal": "[QUEUE_DEAL"}[plan.entity] + (
            "_UPDATE]" if plan.remote_id else "]"
        )
        if plan.key in response.errors:
            plan.outcome = _command_error(plan, response, action)
            log.warning("%s sync=%s object=%s failed: %s", prefix, sync.pk, sync.object_id, plan.outcome.error)
            return
        if not plan.remote_id:
            plan.remote_id = str(response.results.get(plan.key))
        state = {"STAGE_ID": plan.state["fields"].get("STAGE_ID")} if plan.entity == "deal" else {}
        if plan.state.get("sent"):
            state["sent"] = plan.state["sent"]  # the stages sent so far stay known as ours (inbound echo check)
        if plan.entity == "contact":
            got = response.results.get(f"g{sync.pk}")
            state = payloads.multi_field_ids(got) if isinstance(got, dict) else {}
        plan.outcome = Outcome(
            verdict=Verdict.OK,
            remote_id=plan.remote_id,
            http=response.http,
            link_state=state,
            request_summary=f"batch crm.{plan.entity}.{'update' if action == 'update' else 'add'} id={plan.remote_id}",
        )
        log.info("%s sync=%s object=%s %s → %s", prefix, sync.pk, sync.object_id, action, plan.remote_id)


def _chunks(plans: list[Plan], commands_of):
    """(plans, their commands) groups of at most BATCH_SIZE commands: a plan may need one command (add) or two
    (a contact's update + get), so groups are cut by counting commands, never plans."""
    group: list[Plan] = []
    commands: dict = {}
    for plan in plans:
        mine = commands_of(plan)
        if group and len(commands) + len(mine) > BATCH_SIZE:
            yield group, commands
            group, commands = [], {}
        group.append(plan)
        commands.update(mine)
    if group:
        yield group, commands


def _note_stages(plans: list[Plan]) -> None:
    """Before a deal update goes out, note its stage on the link: if the answer is lost, the portal's echo of it is
    still recognised as ours (integrations/inbound/echoes.py)."""
    stages = {
        p.link.pk: p.state["fields"]["STAGE_ID"]
        for p in plans
        if p.entity == "deal" and p.link is not None and p.state.get("fields", {}).get("STAGE_ID")
    }
    sent = stages_sent_note(stages=stages)
    for plan in plans:
        if plan.link is not None and plan.link.pk in sent:
            plan.state["sent"] = sent[plan.link.pk]


def _default_client(integration: Integration) -> BitrixClient:
    return bitrix_client_for(integration)


def _mark_lookups(plans: list[Plan]) -> None:
    """Look a create up remotely first unless it is the object's very first try (an earlier one may have landed)."""
    candidates = [p for p in plans if not p.remote_id and p.outcome is None]
    # Only tries that may have reached Bitrix count: a rate-limit deferral or a 4xx did not create anything.
    tried = set(
        SyncAttempt.objects.filter(sync_id__in=[p.item.id for p in candidates])
        .exclude(outcome__in=[AttemptOutcome.DEFERRED, AttemptOutcome.TERMINAL])
        .values_list("sync_id", flat=True)
    )
    for plan in candidates:
        sync = plan.item.sync
        plan.needs_lookup = sync.event_type != EventType.CREATED or sync.attempts > 1 or sync.pk in tried


def _defer_unsent(plans: list[Plan], *, error: str, retry_after: float | None = None) -> None:
    for plan in plans:
        plan.outcome = plan.outcome or Outcome(verdict=Verdict.DEFERRED, retry_after=retry_after, error=error)


def _lookup_params(plan: Plan) -> dict:
    return {
        "filter": {"ORIGINATOR_ID": settings.BITRIX_ORIGINATOR_ID, "ORIGIN_ID": plan.item.sync.object_id},
        "select": ["ID"],
        "order": {"ID": "ASC"},
    }


def _has_ids(plan: Plan) -> bool:
    state = plan.link.remote_state if plan.link else {}
    return bool(state) and ("EMAIL" in state or "PHONE" in state)


def _fail_all(plans: list[Plan], response: BitrixResponse, *, summary: str) -> None:
    verdict = policy.classify_http(
        response.http.status, maybe_applied=response.http.maybe_applied, error_code=response.error
    )
    if response.auth_failed:
        verdict = Verdict.TERMINAL
    error = response.error_description or response.error or response.http.error or f"HTTP {response.http.status}"
    for plan in plans:
        plan.outcome = Outcome(
            verdict=verdict, http=response.http, retry_after=response.retry_after, error=error, request_summary=summary
        )


def _command_error(plan: Plan, response: BitrixResponse, action: str) -> Outcome:
    err = response.errors.get(plan.key) or {}
    text = (
        f"{action} {plan.entity} {plan.remote_id or ''}: {err.get('error') or ''} {err.get('error_description') or ''}"
    )
    code = err.get("error") or ""
    verdict = Verdict.DEFERRED if code in policy.RATE_LIMIT_ERRORS else Verdict.TERMINAL
    return Outcome(verdict=verdict, http=response.http, error=text.strip(), retry_after=response.retry_after)


def _deleted_note(entity: str, link: ExternalLink | None) -> str:
    if entity == "contact":
        return "user deleted: the Bitrix24 contact is kept (CRM history)"
    return "order deleted before it reached Bitrix24: nothing to do"


def _ensure_user_sync(integration: Integration, user_id: str) -> None:
    """An order waits for its contact; make sure something will create it, for this integration only (idempotent)."""
    from integrations import outbox
    from users.models import User

    user = User.objects.filter(pk=user_id).first()
    if user is None or user.is_staff:
        return
    outbox.record(user, EventType.CREATED, integrations=[integration])
