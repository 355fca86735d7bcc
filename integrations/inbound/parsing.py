"""Pure parsing of inbound calls: query and body (form, multipart, JSON) as flat bracket keys; what a call is about."""

import hashlib
import json
import re
from dataclasses import dataclass
from io import BytesIO
from typing import Any
from urllib.parse import parse_qsl

from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.http.multipartparser import MultiPartParser
from django.utils.http import parse_header_parameters

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
JSON = "application/json"
MAX_FIELDS = 1000
MAX_JSON_DEPTH = 8
MAX_KEY = 200
_CRM_EVENT = re.compile(r"^ONCRM(DEAL|CONTACT|LEAD|COMPANY)")


class BadRequest(Exception):
    """The body cannot be used; `status` is the answer (400 malformed, 415 unsupported)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Subject:
    """What a call is about: event name (ONCRMDEALUPDATE, ROBOT, or empty), remote object (DEAL_123) and ts."""

    event: str = ""
    remote_object: str = ""
    ts: str = ""


def clean(text: Any, limit: int | None = None) -> str:
    """A string PostgreSQL can store: no NUL, no lone surrogates; optionally cut to `limit` characters."""
    text = str(text).encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    return text[:limit] if limit is not None else text


def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    media, params = parse_header_parameters(content_type or "")
    return media.strip().lower(), params


def is_supported(media: str) -> bool:
    return media in (FORM, MULTIPART, JSON) or (media.startswith("application/") and media.endswith("+json"))


def query_text(meta: dict) -> str:
    """The query string as text: WSGI hands it over as latin-1, the bytes are UTF-8 (as request.GET reads it)."""
    return meta.get("QUERY_STRING", "").encode("iso-8859-1", "replace").decode("utf-8", "replace")


def parse_query(query_string: str) -> dict[str, Any]:
    """Query values exactly as sent (`?test="test2"` keeps its quotes); a repeated key keeps all its values."""
    try:
        pairs = parse_qsl(query_string, keep_blank_values=True, errors="replace", max_num_fields=MAX_FIELDS)
    except ValueError:
        raise BadRequest(400, "Too many query parameters.")
    query: dict[str, Any] = {}
    for key, value in pairs:
        key, value = clean(key, MAX_KEY), clean(value)
        if key in query:
            previous = query[key]
            query[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            query[key] = value
    return query


def parse_body(raw: bytes, content_type: str, meta: dict) -> dict[str, str]:
    """Flat {bracket key: value} of a body; empty body → {}. Raises BadRequest."""
    if not raw:
        return {}
    media, params = media_type(content_type)
    if not is_supported(media):
        raise BadRequest(415, "Unsupported content type; send form-urlencoded, multipart/form-data or JSON.")
    charset = params.get("charset") or "utf-8"
    try:
        "".encode(charset)
    except (LookupError, ValueError):
        raise BadRequest(415, "Unsupported charset.")
    if media == FORM:
        return _form(raw, charset)
    if media == MULTIPART:
        return _multipart(raw, charset, meta)
    return _json(raw)


def _form(raw: bytes, charset: str) -> dict[str, str]:
    try:
        text = raw.decode(charset)
    except (UnicodeDecodeError, ValueError):
        text = raw.decode("iso-8859-1")  # as Django does: never fail on a bad byte
    try:
        pairs = parse_qsl(text, keep_blank_values=True, encoding=charset, errors="replace", max_num_fields=MAX_FIELDS)
    except ValueError:
        raise BadRequest(400, "Too many form fields.")
    return {clean(k): clean(v) for k, v in pairs}


class _SkipFiles(FileUploadHandler):
    """Uploaded files are never kept: only form fields matter here."""

    def new_file(self, *args, **kwargs):
        raise SkipFile()

    def receive_data_chunk(self, raw_data, start):
        return None

    def file_complete(self, file_size):
        return None


def _multipart(raw: bytes, charset: str, meta: dict) -> dict[str, str]:
    meta = {**meta, "CONTENT_LENGTH": str(len(raw))}
    try:
        post, _files = MultiPartParser(meta, BytesIO(raw), [_SkipFiles()], charset).parse()
    except Exception:  # noqa: BLE001 - Django raises several kinds for broken multipart; all mean "malformed"
        raise BadRequest(400, "Malformed multipart body.")
    if len(post) > MAX_FIELDS:
        raise BadRequest(400, "Too many form fields.")
    return {clean(k): clean(v) for k, v in post.items()}


def _json(raw: bytes) -> dict[str, str]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest(400, "Malformed JSON body.")
    if not isinstance(data, dict):
        raise BadRequest(400, "The JSON body must be an object.")
    fields: dict[str, str] = {}
    _flatten(data, "", fields, 0)
    return fields


def _flatten(value: Any, prefix: str, out: dict[str, str], depth: int) -> None:
    """JSON → the same bracket keys a form would use (auth[application_token], document_id[2])."""
    if isinstance(value, dict | list):
        if depth >= MAX_JSON_DEPTH:
            out[prefix] = "(nested)"
            return
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            name = f"{prefix}[{clean(key, MAX_KEY)}]" if prefix else clean(key, MAX_KEY)
            _flatten(item, name, out, depth + 1)
            if len(out) > MAX_FIELDS:
                raise BadRequest(400, "Too many JSON fields.")
        return
    if value is None:
        out[prefix] = ""
    elif isinstance(value, bool):
        out[prefix] = "true" if value else "false"
    else:
        out[prefix] = clean(value)


def subject(fields: dict[str, str]) -> Subject:
    """Event-handler call (event + data[FIELDS][ID] + ts) or business-process robot (document_id[2] = DEAL_123)."""
    event = clean(fields.get("event", ""), 100).strip().upper()
    if event:
        match = _CRM_EVENT.match(event)
        object_id = clean(fields.get("data[FIELDS][ID]", ""), 80).strip()
        remote_object = f"{match.group(1)}_{object_id}" if match and object_id else ""
        return Subject(event=event, remote_object=remote_object, ts=clean(fields.get("ts", ""), 40).strip())
    document = clean(fields.get("document_id[2]", ""), 100).strip().upper()
    if document:
        return Subject(event="ROBOT", remote_object=document)
    return Subject()


def dedupe_key(subj: Subject, *, fingerprint: str, minute: str) -> str:
    """Event handlers: event + object + ts. Others: hash of body and query within the minute of receipt, because a
    robot legitimately sends the same body again when the deal re-enters its stage later."""
    if subj.event and subj.event != "ROBOT" and subj.remote_object and subj.ts:
        key = f"{subj.event}:{subj.remote_object}:{subj.ts}"
    else:
        key = f"sha256:{_sha(minute + chr(10) + fingerprint)}"
    return key if len(key) <= 200 else f"sha256:{_sha(key)}"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
