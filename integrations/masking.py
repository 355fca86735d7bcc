"""How secrets look wherever a person can see them: admin, API, commands, logs, stored errors.

One rule for every integration kind: an endpoint URL is shown as `scheme://host/***`. Everything after the host (user
info, path, query, fragment) is secret: Bitrix24 keeps its webhook code in the path (/rest/<user>/<code>/), n8n its
webhook id (/webhook/<path>), other receivers a ?token=. Texts that may quote an endpoint (exception messages,
response excerpts, stored errors, log lines) are scrubbed of those parts wherever they appear, and of the shapes of
the other secrets we know (tokens in queries and JSON, whsec_ keys, URLs in general).
"""

import re
import threading
from collections import OrderedDict
from functools import lru_cache
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
# Path segments that name a URL's structure, not a secret; masking them everywhere would only make texts unreadable.
_STRUCTURAL = frozenset({"rest", "webhook", "webhook-test", "webhooks", "hook", "hooks", "api", "v1", "v2", "json"})
_SHORT = 8  # secret parts shorter than this are masked only as whole words ("shop" not inside "shopping")
_MIN = 4  # ...and parts shorter than this not at all: masking every "ab" would destroy the text

# Generic shapes: /rest/<user>/<code>/, token-like query/body values, whsec_ keys, the path of any absolute URL, and
# the `with url: /path` of urllib3's connection errors.
_SHAPES = [
    (re.compile(r"(/rest/\d+/)[^/\s\"']+"), r"\1" + MASK),
    (re.compile(r"((?:token|application_token|secret|code)[\]\"']?\s*[=:]\s*[\"']?)[^&\s\"',]+", re.I), r"\1" + MASK),
    (re.compile(r"whsec_[A-Za-z0-9+/=]+"), "whsec_" + MASK),
]
_URL_PATH = re.compile(r"((?:https?|wss?)://[^/\s\"'<>?#]+)[/?#][^\s\"'<>]*", re.I)
_URLLIB3_URL = re.compile(r"(with url: )\S+")


def mask_endpoint(url: str) -> str:
    """Keep scheme and host only, for every kind of integration."""
    if not url:
        return ""
    parts = urlsplit(url)
    if not parts.netloc:
        return MASK
    host = parts.netloc.rpartition("@")[2]  # user:password@ is secret too
    return f"{parts.scheme}://{host}/{MASK}"


def mask_secret(secret: str) -> str:
    if not secret:
        return ""
    return f"{secret[:6]}…{'*' * 6}" if secret.startswith("whsec_") else "******"


@lru_cache(maxsize=512)
def endpoint_secrets(url: str) -> tuple[str, ...]:
    """The parts of an endpoint URL that must never be shown, longest first (as written and percent-decoded)."""
    if not url:
        return ()
    parts = urlsplit(url)
    path = parts.path.strip("/")
    candidates = [parts.username or "", parts.password or "", path, parts.query, parts.fragment, *path.split("/")]
    candidates += [value for _, value in parse_qsl(parts.query)]
    found = set()
    for candidate in candidates:
        for form in (candidate, unquote(candidate)):
            if len(form) >= _MIN and form.lower() not in _STRUCTURAL and not (form.isdigit() and len(form) < 6):
                found.add(form)
    return tuple(sorted(found, key=lambda s: (-len(s), s)))


def redact(text: str) -> str:
    """Mask the generic secret shapes (webhook codes, tokens, whsec_ keys) in text."""
    for pattern, replacement in _SHAPES:
        text = pattern.sub(replacement, text)
    return text


def scrub(text: str, secrets: tuple[str, ...] | list[str] = (), *, urls: bool = True) -> str:
    """text with the given secret parts, the endpoints seen by this process and every generic shape masked.

    urls=False keeps URL paths (stored inbound bodies quote the portal's public endpoints)."""
    if not text:
        return text
    for secret in (*secrets, *known_secrets()):
        if secret in text:
            text = _replace(text, secret)
    text = redact(text)
    if urls:
        text = _URLLIB3_URL.sub(r"\1" + MASK, _URL_PATH.sub(r"\1/" + MASK, text))
    return text


def _replace(text: str, secret: str) -> str:
    if len(secret) >= _SHORT:
        return text.replace(secret, MASK)
    return re.sub(rf"(?<![\w-]){re.escape(secret)}(?![\w-])", MASK, text)


# Endpoints this process has talked to, so the log filter masks their parts even where a message quotes them bare
# (e.g. a library's debug line "POST /webhook/<id> HTTP/1.1"). Bounded: oldest forgotten first.
_KNOWN: OrderedDict[str, tuple[str, ...]] = OrderedDict()
_KNOWN_LOCK = threading.Lock()
_KNOWN_MAX = 256
_known_flat: tuple[str, ...] = ()


def remember_endpoint(url: str) -> tuple[str, ...]:
    """Register an endpoint's secret parts for scrub() in this process; returns them."""
    global _known_flat
    secrets = endpoint_secrets(url)
    if url in _KNOWN:
        return secrets
    with _KNOWN_LOCK:
        _KNOWN[url] = secrets
        while len(_KNOWN) > _KNOWN_MAX:
            _KNOWN.popitem(last=False)
        _known_flat = tuple(sorted({s for parts in _KNOWN.values() for s in parts}, key=lambda s: (-len(s), s)))
    return secrets


def known_secrets() -> tuple[str, ...]:
    return _known_flat
