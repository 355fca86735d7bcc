"""POST /bitrix/webhook: a gate. Check, store the request (rejected ones too), dedupe, enqueue, answer fast."""

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from integrations.inbound import auth, parsing, services

log = logging.getLogger("integrations.inbound")


@dataclass
class Capture:
    """What we keep of one request; `record` holds InboundWebhook fields (masked once _masked() ran)."""

    record: dict[str, Any]
    raw: bytes
    query: dict[str, Any]
    fields: dict[str, str] = field(default_factory=dict)
    body: str = ""


@csrf_exempt
def bitrix_webhook(request: HttpRequest) -> JsonResponse:
    """Never a 5xx except 503 when the database is unreachable; never a traceback in the answer."""
    try:
        return _gate(request)
    except (OperationalError, InterfaceError) as exc:
        log.error("[INBOUND] row=- storage unavailable (%s)", type(exc).__name__)
        return _answer(503, "error", "Storage unavailable, try again later.")
    except Exception:  # noqa: BLE001 - anything unexpected is logged and answered as a rejected request
        log.exception("[INBOUND] row=- unexpected error in the gate")
        return _answer(400, "error", "The request could not be handled.")


def _gate(request: HttpRequest) -> JsonResponse:
    limit = settings.INBOUND_MAX_BODY_BYTES
    try:
        query = parsing.parse_query(parsing.query_text(request.META))
    except parsing.BadRequest as exc:
        return _reject(request, _capture(request, b"", {}), exc.status, exc.message)
    if request.method != "POST":
        return _reject(request, _capture(request, b"", query), 405, "Only POST is accepted.")
    declared_too_large = _declared_length(request) > limit
    raw = request.read(services.REJECTED_BODY_BYTES if declared_too_large else limit + 1)
    capture = _capture(request, raw, query)
    if declared_too_large or len(raw) > limit:
        capture.record["body_truncated"] = True
        return _reject(request, capture, 413, f"Body larger than {limit} bytes.")
    try:
        capture.fields = parsing.parse_body(raw, request.META.get("CONTENT_TYPE", ""), request.META)
    except parsing.BadRequest as exc:
        return _reject(request, capture, exc.status, exc.message)
    if not auth.secrets_configured():
        return _reject(request, capture, 401, "Inbound calls are disabled: no secret is configured.")
    if not auth.is_authenticated(query=query, headers=request.headers, fields=capture.fields):
        return _reject(request, capture, 401, "Missing or invalid token.")
    return _accept(request, capture)


def _accept(request: HttpRequest, capture: Capture) -> JsonResponse:
    capture = _masked(capture, request)
    subject = parsing.subject(capture.fields)
    key = parsing.dedupe_key(
        subject,
        fingerprint=f"{sorted(capture.record['query'].items())!r}\n{capture.body}",
        minute=timezone.now().strftime("%Y-%m-%dT%H:%M"),
    )
    record = {**capture.record, "event": subject.event, "remote_object": subject.remote_object}
    row = services.inbound_store_accepted(record=record, body=capture.body, dedupe_key=key)
    if row.dedupe_key is None:
        return JsonResponse({"status": "duplicate", "id": row.pk, "duplicate_of": row.result.get("duplicate_of")})
    return JsonResponse({"status": "accepted", "id": row.pk})


def _reject(request: HttpRequest, capture: Capture, status: int, message: str) -> JsonResponse:
    capture = _masked(capture, request)
    services.inbound_store_rejected(record=capture.record, body=capture.body, error=f"{status}: {message}")
    return _answer(status, "rejected", message)


def _answer(status: int, kind: str, message: str) -> JsonResponse:
    return JsonResponse({"status": kind, "message": message}, status=status)


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _capture(request: HttpRequest, raw: bytes, query: dict[str, Any]) -> Capture:
    """The row's plain request fields; query, headers and body are added masked by _masked()."""
    record = {
        "remote_addr": _ip(request.META.get("REMOTE_ADDR")),
        "method": parsing.clean(request.method or "", 10),
        "path": parsing.clean(request.path, 255),
        "content_type": parsing.clean(request.META.get("CONTENT_TYPE", ""), 150),
    }
    return Capture(record=record, raw=raw, query=query)


def _masked(capture: Capture, request: HttpRequest) -> Capture:
    """Query, safe headers and body text with every secret masked (values found in the parsed body included)."""
    secrets = auth.secret_values(query=capture.query, headers=request.headers, fields=capture.fields)
    media, _ = parsing.media_type(capture.record["content_type"])
    text = parsing.clean(capture.raw.decode("utf-8", "replace"))
    capture.body = auth.mask_text(text, secrets, form=media != parsing.JSON, json_pairs=media != parsing.FORM)
    capture.record["query"] = auth.mask_query(capture.query, secrets)
    capture.record["headers"] = auth.safe_headers(request.headers, secrets)
    return capture


def _ip(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address((value or "").strip()))
    except ValueError:
        return None
