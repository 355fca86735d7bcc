from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from integrations import payloads, selectors
from integrations.management.commands._tables import cell, table
from integrations.models import Integration, IntegrationKind

LIST_SELECT = {"deal": ["ID", "TITLE", "STAGE_ID"], "contact": ["ID", "NAME", "LAST_NAME"]}


class Command(BaseCommand):
    help = (
        "One object's timeline: current state, every event with its attempts, links, inbound calls about it, and a "
        "live Bitrix24 lookup by ORIGINATOR_ID/ORIGIN_ID that flags duplicates. Example: sync_explain order 41"
    )

    def add_arguments(self, parser):
        parser.add_argument("object_type", choices=sorted(selectors.SYNCED_MODELS))
        parser.add_argument("object_id")
        parser.add_argument("--no-remote", action="store_true", help="skip the live Bitrix24 lookup")

    def handle(self, *args, **options):
        try:
            ref = selectors.object_ref(options["object_type"], options["object_id"])
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages))
        integrations = list(Integration.objects.order_by("id"))
        out = [self._current(ref)]
        links = selectors.object_links(ref)
        syncs = list(selectors.sync_list(ref=ref).order_by("integration_id", "sequence"))
        remote_ids = {link.remote_id for link in links} | {s.remote_id for s in syncs if s.remote_id}
        lookups = [] if options["no_remote"] else [self._lookup(i, ref) for i in integrations if _is_bitrix(i)]
        remote_ids |= {str(d.get("ID")) for lookup in lookups for d in lookup["deals"]}
        entity = selectors.BITRIX_ENTITY[ref.object_type].upper()
        inbound = selectors.inbound_mentioning(sorted(f"{entity}_{rid}" for rid in remote_ids if rid))
        out.append(self._timeline(syncs, inbound))
        out.append(self._links(links))
        out += [self._remote(lookup, links, ref) for lookup in lookups]
        self.stdout.write(_scrub("\n\n".join(out), integrations))

    def _current(self, ref) -> str:
        obj = ref.load()
        if obj is None:
            return f"{ref}: not in the database (deleted, or never existed)"
        state = " ".join(f"{k}={cell(v)}" for k, v in payloads.snapshot(obj).items() if k != "id")
        return f"{ref}: {obj}\n  {state}"

    def _timeline(self, syncs, inbound) -> str:
        events = []
        for sync in syncs:
            detail = sync.last_error or (f"remote {sync.remote_id}" if sync.remote_id else "")
            what = f"sync #{sync.pk} {sync.event_name} seq {sync.sequence}"
            events.append((sync.created_at, sync.pk, 0, [sync.integration.name, what, sync.status, detail]))
            for attempt in sync.attempt_rows.all():
                http = f"HTTP {attempt.http_status}" if attempt.http_status else "no response"
                error = " ".join(p for p in (attempt.error_class, attempt.error_message) if p)
                detail = f"{http}, {attempt.duration_ms} ms, {attempt.request_summary} {error}".strip()
                row = [sync.integration.name, f"  attempt {attempt.number} of #{sync.pk}", attempt.outcome, detail]
                events.append((attempt.started_at, sync.pk, attempt.pk, row))
        for call in inbound:
            detail = f"{call.remote_object} {call.error}".strip()
            row = ["inbound", f"call #{call.pk} {call.event or call.method}", call.status, detail]
            events.append((call.received_at, 0, call.pk, row))
        if not events:
            return "Timeline: no events recorded for this object."
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        return "Timeline\n" + table(
            ["time", "integration", "what", "status", "detail"], [[e[0], *e[3]] for e in events]
        )

    def _links(self, links) -> str:
        if not links:
            return "Links: none (no create has been delivered)."
        rows = [[link.integration.name, link.remote_id, link.created_at, link.updated_at] for link in links]
        return "Links\n" + table(["integration", "remote id", "linked at", "updated at"], rows)

    def _lookup(self, integration: Integration, ref) -> dict:
        """Ask the portal which records carry our ORIGINATOR_ID and this object's ORIGIN_ID."""
        from integrations.targets.bitrix_limits import RateLimitTimeout, bitrix_client_for

        entity = selectors.BITRIX_ENTITY[ref.object_type]
        params = {
            "filter": {"ORIGINATOR_ID": settings.BITRIX_ORIGINATOR_ID, "ORIGIN_ID": ref.object_id},
            "select": LIST_SELECT[entity],
        }
        client = bitrix_client_for(integration, request_id="explain", wait_on_rate_limit=True)
        try:
            response = client.call(f"crm.{entity}.list", params)
        except RateLimitTimeout as exc:
            return {"integration": integration, "entity": entity, "deals": [], "error": str(exc)}
        if not response.ok or not isinstance(response.result, list):
            error = response.error or response.http.error_class or f"HTTP {response.http.status}"
            return {"integration": integration, "entity": entity, "deals": [], "error": error}
        return {"integration": integration, "entity": entity, "deals": response.result, "error": ""}

    def _remote(self, lookup: dict, links, ref) -> str:
        integration, entity = lookup["integration"], lookup["entity"]
        head = f"Remote ({integration.name}, live crm.{entity}.list by ORIGIN_ID {ref.object_id})"
        if lookup["error"]:
            return f"{head}: lookup failed: {lookup['error']}"
        linked = next((link.remote_id for link in links if link.integration_id == integration.pk), None)
        found = lookup["deals"]
        rows, problems = [], []
        for record in found:
            record_id = str(record.get("ID"))
            mark = "linked" if record_id == linked else "NOT LINKED"
            rows.append([record_id, *(record.get(f) for f in LIST_SELECT[entity][1:]), mark])
        if len(found) > 1:
            problems.append(f"DUPLICATE: {len(found)} {entity}s carry ORIGIN_ID {ref.object_id}")
        strays = [r[0] for r in rows if r[-1] != "linked"]
        if strays and linked:
            problems.append(f"DUPLICATE: {entity} {', '.join(strays)} is not the linked {entity} {linked}")
        elif strays:
            problems.append(f"{entity} {', '.join(strays)} exists remotely but no link is stored")
        if linked and linked not in {r[0] for r in rows}:
            problems.append(f"linked {entity} {linked} was not found by ORIGIN_ID (deleted or ORIGIN_ID changed)")
        if not found:
            body = f"no {entity} found"
        else:
            body = table(["id", *LIST_SELECT[entity][1:], "link"], rows)
        verdict = "\n".join(problems) or "OK: exactly the linked record"
        return f"{head}\n{body}\n{verdict}"


def _is_bitrix(integration: Integration) -> bool:
    return integration.kind == IntegrationKind.BITRIX24 and bool(integration.endpoint)


def _scrub(text: str, integrations: list[Integration]) -> str:
    """Belt and braces: no endpoint (Bitrix webhook code) or signing secret can leave through this output."""
    secrets = []
    for i in integrations:
        secrets += [i.endpoint, i.secret, i.previous_secret]
        path = urlsplit(i.endpoint).path.strip("/")
        # Path segments that look like codes or tokens (not words such as "rest" or "webhook").
        secrets += [p for p in path.split("/") if len(p) >= 16 or (len(p) >= 6 and any(c.isdigit() for c in p))]
    for secret in sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
