"""Who may call the inbound view (fail closed, constant-time compare), and keeping secrets out of what we store."""

import hmac
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from django.conf import settings

from app.logging import redact
from integrations.inbound.parsing import clean

TOKEN_FIELD = "token"
TOKEN_HEADER = "X-Bitrix-Webhook-Token"
APPLICATION_TOKEN_FIELD = "auth[application_token]"
MASK = "***"
MAX_HEADERS = 50
MAX_HEADER_VALUE = 1000
# Presented values shorter than this are not searched for in the body: masking every "a" would destroy the record.
MIN_PRESENTED_SECRET = 6
_SECRET_NAME = re.compile(r"token|secret|passw|signature|cookie|authorization|api[-_]?key|access[-_]?key", re.I)
# Linear patterns (no nested quantifiers): the name is checked in the callback, not in the regex.
_FORM_PAIR = re.compile(r"(^|&)([^=&]*)=([^&]*)")
_JSON_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"(\s*:\s*)("(?:[^"\\]|\\.)*"|[^,}\]\s]+)')


def secrets_configured() -> bool:
    return bool(settings.BITRIX_WEBHOOK_TOKEN or settings.BITRIX_APPLICATION_TOKEN)


def is_authenticated(*, query: Mapping[str, Any], headers: Mapping[str, str], fields: Mapping[str, str]) -> bool:
    """BITRIX_WEBHOOK_TOKEN as ?token=, header or body `token`; or auth[application_token]. No secret → False."""
    token = settings.BITRIX_WEBHOOK_TOKEN
    if token:
        presented = [*_as_list(query.get(TOKEN_FIELD)), headers.get(TOKEN_HEADER), fields.get(TOKEN_FIELD)]
        if any(_same(value, token) for value in presented):
            return True
    application_token = settings.BITRIX_APPLICATION_TOKEN
    return bool(application_token) and _same(fields.get(APPLICATION_TOKEN_FIELD), application_token)


def _same(presented: Any, secret: str) -> bool:
    if not isinstance(presented, str) or not presented:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "replace"), secret.encode("utf-8", "replace"))


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def secret_values(*, query: Mapping[str, Any], headers: Mapping[str, str], fields: Mapping[str, str]) -> list[str]:
    """Configured secrets plus every value presented under a secret-looking name, longest first."""
    found = {settings.BITRIX_WEBHOOK_TOKEN, settings.BITRIX_APPLICATION_TOKEN}
    presented: list[str] = [v for k, v in fields.items() if is_secret_name(k)]
    presented += [v for k, vs in query.items() if is_secret_name(k) for v in _as_list(vs)]
    presented += [v for k, v in headers.items() if is_secret_name(k)]
    found.update(v for v in presented if len(v) >= MIN_PRESENTED_SECRET)
    return sorted((v for v in found if v), key=len, reverse=True)


def mask_text(text: str, secrets: Iterable[str], *, form: bool = True, json_pairs: bool = True) -> str:
    """Mask secret-named form/JSON values, every known secret value (raw, url- and JSON-encoded) and URL codes."""
    if form:
        text = _FORM_PAIR.sub(_mask_form_pair, text)
    if json_pairs:
        text = _JSON_PAIR.sub(_mask_json_pair, text)
    for secret in secrets:
        for form in {secret, quote_plus(secret), quote(secret, safe=""), json.dumps(secret)[1:-1]}:
            text = text.replace(form, MASK)
    return redact(text)


def _mask_form_pair(match: re.Match) -> str:
    lead, name, value = match.groups()
    return f"{lead}{name}={MASK}" if value and is_secret_name(name) else match.group(0)


def _mask_json_pair(match: re.Match) -> str:
    name, colon, value = match.groups()
    return f'"{name}"{colon}"{MASK}"' if is_secret_name(name) else match.group(0)


def mask_query(query: Mapping[str, Any], secrets: Iterable[str]) -> dict[str, Any]:
    """Secret-named keys become ***; other values keep their exact text unless a secret value is inside them."""
    secrets = list(secrets)
    masked: dict[str, Any] = {}
    for key, value in query.items():
        if is_secret_name(key):
            masked[key] = MASK
        elif isinstance(value, list):
            masked[key] = [_replace_secrets(v, secrets) for v in value]
        else:
            masked[key] = _replace_secrets(value, secrets)
    return masked


def _replace_secrets(value: str, secrets: list[str]) -> str:
    for secret in secrets:
        value = value.replace(secret, MASK)
    return value


def safe_headers(headers: Mapping[str, str], secrets: Iterable[str]) -> dict[str, str]:
    """Headers worth keeping: never Cookie, Authorization or token headers; values capped and masked."""
    secrets = list(secrets)
    kept: dict[str, str] = {}
    for name, value in headers.items():
        if len(kept) >= MAX_HEADERS:
            break
        if is_secret_name(name):
            continue
        kept[clean(name, 100)] = clean(mask_text(str(value), secrets, json_pairs=False), MAX_HEADER_VALUE)
    return kept
