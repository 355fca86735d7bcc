"""The one outgoing HTTP session: every request has a timeout, and transport failures become results, not exceptions."""

import os
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from integrations.masking import endpoint_secrets, scrub

EXCERPT_BYTES = 2048


@dataclass
class HttpResult:
    """What one HTTP exchange produced. status is None when no response arrived."""

    status: int | None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    duration_ms: int = 0
    error_class: str = ""
    error: str = ""
    # True when the request may have reached the server although no answer came back (read timeout, reset):
    # the outcome is unknown and a create must be looked up remotely before it is retried.
    maybe_applied: bool = False
    # The endpoint's secret parts (integrations.masking), masked out of the excerpt: error pages may quote the URL.
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def excerpt(self) -> str:
        return scrub(self.body[:EXCERPT_BYTES].decode("utf-8", "replace"), self.secrets)

    def json(self) -> Any:
        import json

        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None


class TimeoutSession(requests.Session):
    """A requests session that refuses to send without a (connect, read) timeout.

    The environment (HTTPS_PROXY/HTTP_PROXY/NO_PROXY, REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE) is read once per origin,
    not on every request as requests does by default (a netrc lookup and an environment scan per POST cost more than
    the POST itself to a nearby endpoint). ~/.netrc is never consulted: our endpoints authenticate by URL code or
    signature, and a stray netrc entry must not add credentials to them."""

    def __init__(self, connect: float = 5.0, read: float = 15.0, pool_size: int = 20):
        super().__init__()
        self.trust_env = False
        self.default_timeout = (connect, read)
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self._environment: dict[tuple[str, str], dict[str, Any]] = {}

    def request(self, method, url, **kwargs):  # noqa: D401 - requests signature
        kwargs["timeout"] = kwargs.get("timeout") or self.default_timeout
        for name, value in self._environment_for(url).items():
            if kwargs.get(name) is None:
                kwargs[name] = value
        return super().request(method, url, **kwargs)

    def _environment_for(self, url: str) -> dict[str, Any]:
        origin = urlsplit(url)[:2]
        if origin not in self._environment:
            settings: dict[str, Any] = {"proxies": get_environ_proxies(url)}
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if bundle:
                settings["verify"] = bundle
            self._environment[origin] = settings
        return self._environment[origin]


def send(session: requests.Session, method: str, url: str, **kwargs) -> HttpResult:
    """Perform one request; never raises for HTTP statuses or transport errors."""
    secrets = endpoint_secrets(url)
    started = time.monotonic()
    try:
        response = session.request(method, url, **kwargs)
    except requests.exceptions.ConnectTimeout as exc:
        return _failure(started, exc, secrets, maybe_applied=False)
    except requests.exceptions.ReadTimeout as exc:
        return _failure(started, exc, secrets, maybe_applied=True)
    except requests.exceptions.ConnectionError as exc:
        # Refused/unresolvable never reached the server; a reset or a dropped connection may have.
        text = str(exc)
        not_sent = any(s in text for s in ("NewConnectionError", "Connection refused", "Name or service"))
        return _failure(started, exc, secrets, maybe_applied=not not_sent)
    except requests.exceptions.RequestException as exc:
        return _failure(started, exc, secrets, maybe_applied=False)
    return HttpResult(
        status=response.status_code,
        body=response.content,
        headers={k.lower(): v for k, v in response.headers.items()},
        duration_ms=int((time.monotonic() - started) * 1000),
        secrets=secrets,
    )


def _failure(started: float, exc: Exception, secrets: tuple[str, ...], *, maybe_applied: bool) -> HttpResult:
    """Exception texts quote the URL (with the webhook code or path): they are kept masked."""
    return HttpResult(
        status=None,
        duration_ms=int((time.monotonic() - started) * 1000),
        error_class=type(exc).__name__,
        error=scrub(str(exc), secrets)[:500],
        maybe_applied=maybe_applied,
        secrets=secrets,
    )
