"""Thin Bitrix24 inbound-webhook client: one HTTP call per method, typed outcome, no sleeping, retrying or raising."""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import requests

from integrations.clients.http import HttpResult, TimeoutSession, send
from integrations.clients.params import encode_params
from integrations.masking import mask_endpoint, remember_endpoint
from integrations.policy import RATE_LIMIT_ERRORS, parse_retry_after

MAX_BATCH = 50
_METHOD = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")
_AUTH_ERRORS = {"NO_AUTH_FOUND", "INVALID_CREDENTIALS", "EXPIRED_TOKEN", "INVALID_TOKEN", "WRONG_AUTH_TYPE"}
# QUERY_LIMIT_EXCEEDED comes as 503 (429 in older portals): the portal's bucket is empty.
RATE_LIMIT_STATUSES = {429, 503}
# error_class of the synthetic result when `acquire` returned False: nothing was sent.
LOCAL_RATE_LIMIT = "LocalRateLimitTimeout"
REQUEST_ID_HEADER = "X-Request-Id"


def mask_webhook_url(url: str) -> str:
    """https://portal/rest/1/<code>/ -> https://portal/*** (the one rule of integrations.masking for every kind)."""
    return mask_endpoint(url)


@dataclass
class BitrixResponse:
    """One method call's outcome; error is the Bitrix error code ('' when none, also '' for legacy "Not found")."""

    http: HttpResult
    result: Any = None
    error: str = ""
    error_description: str = ""
    time: dict[str, Any] = field(default_factory=dict)
    total: int | None = None
    next: int | None = None
    has_result: bool = field(default=False, repr=False)  # the body was JSON with a `result` key

    @classmethod
    def from_http(cls, http: HttpResult) -> Self:
        if http.error_class == LOCAL_RATE_LIMIT:
            return cls(http=http, error="QUERY_LIMIT_EXCEEDED", error_description=http.error)
        body = http.json() if http.status is not None else None
        if not isinstance(body, dict):
            return cls(http=http)  # transport failure or a non-JSON page (e.g. an HTML 500)
        return cls(
            has_result="result" in body,
            http=http,
            result=body.get("result"),
            error=str(body.get("error") or ""),
            error_description=str(body.get("error_description") or ""),
            time=body.get("time") if isinstance(body.get("time"), dict) else {},
            total=_int_or_none(body.get("total")),
            next=_int_or_none(body.get("next")),
        )

    @property
    def ok(self) -> bool:
        return self.http.ok and self.has_result and not self.error and not self.error_description

    @property
    def transport_error(self) -> bool:
        """No HTTP response at all (connect failure, timeout, dropped connection)."""
        return self.http.status is None

    @property
    def maybe_applied(self) -> bool:
        """The outcome is unknown: a create must be looked up remotely before it is retried."""
        return self.http.maybe_applied

    @property
    def rate_limited(self) -> bool:
        return self.error in RATE_LIMIT_ERRORS or self.http.status == 429

    @property
    def auth_failed(self) -> bool:
        return self.http.status == 401 or self.error.upper() in _AUTH_ERRORS

    @property
    def not_found(self) -> bool:
        return self.error == "NOT_FOUND" or (self.http.status == 400 and "not found" in self.error_description.lower())

    @property
    def server_error(self) -> bool:
        """A 5xx that is not a rate limit: worth retrying later."""
        return self.http.status is not None and self.http.status >= 500 and not self.rate_limited

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait, from a Retry-After header or OPERATION_TIME_LIMIT's operating_reset_at; None if unknown."""
        header = self.http.headers.get("retry-after")
        if header:
            return parse_retry_after(header)
        reset_at = self.time.get("operating_reset_at")
        if self.error == "OPERATION_TIME_LIMIT" and isinstance(reset_at, int | float):
            return max(0.0, float(reset_at) - time.time())
        return None


@dataclass
class BatchResponse(BitrixResponse):
    """batch outcome; per-command maps are keyed by the caller's command keys."""

    @property
    def results(self) -> dict[str, Any]:
        return self._section("result")

    @property
    def errors(self) -> dict[str, dict[str, Any]]:
        return self._section("result_error")

    @property
    def totals(self) -> dict[str, Any]:
        return self._section("result_total")

    @property
    def nexts(self) -> dict[str, Any]:
        return self._section("result_next")

    def _section(self, name: str) -> dict[str, Any]:
        # PHP encodes an empty map as [] and keys 0..n-1 as a list, so normalise to str-keyed dicts.
        value = self.result.get(name) if isinstance(self.result, dict) else None
        if isinstance(value, list):
            return {str(i): v for i, v in enumerate(value)}
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


class PagedList(list):
    """list_all's rows; complete is False when a page failed, and failure holds that page's response."""

    complete: bool = True
    failure: BitrixResponse | None = None


class BitrixClient:
    """POSTs JSON to <webhook_url><method>.json; `acquire` (the shared rate limiter) runs before each request.

    A QUERY_LIMIT_EXCEEDED answer calls `on_rate_limited` (the shared bucket is emptied). With `rate_limit_retries`
    (commands, reconciliation) the request is then sent again, up to that many times, each after `acquire` waited for
    the bucket's refill; deliveries and inbound reads keep 0 and defer instead. OPERATION_TIME_LIMIT (a method
    blocked for minutes) is never retried here.

    `request_id`, when set, goes out as the X-Request-Id header of every request, so a portal-side request log can be
    matched to the delivery round (or inbound call) that made it; Bitrix24 ignores the header. `before_send`, when
    set, runs after the rate-limit token and right before each request (a delivery round's lease check); whatever it
    raises stops the request from being sent."""

    def __init__(
        self,
        webhook_url: str,
        session: requests.Session | None = None,
        acquire: Callable[[], Any] | None = None,
        request_id: str = "",
        on_rate_limited: Callable[[], Any] | None = None,
        before_send: Callable[[], Any] | None = None,
        rate_limit_retries: int = 0,
    ):
        self._webhook_url = webhook_url if webhook_url.endswith("/") else webhook_url + "/"
        remember_endpoint(self._webhook_url)  # log lines of this process mask its code wherever it appears
        self.session = session or TimeoutSession(5, 65)
        self.acquire = acquire
        self.request_id = request_id
        self.on_rate_limited = on_rate_limited
        self.before_send = before_send
        self.rate_limit_retries = rate_limit_retries

    def __repr__(self) -> str:
        return f"BitrixClient({self.masked_url})"

    @property
    def masked_url(self) -> str:
        return mask_webhook_url(self._webhook_url)

    def call(self, method: str, params: dict[str, Any] | None = None) -> BitrixResponse:
        """One REST call."""
        return BitrixResponse.from_http(self._post(method, params or {}))

    def batch(self, commands: dict[str, tuple[str, dict[str, Any]]], halt: bool = False) -> BatchResponse:
        """Up to 50 commands in one request (one against the rate limit); values may hold $result[key][FIELD]."""
        if len(commands) > MAX_BATCH:
            raise ValueError(f"batch takes at most {MAX_BATCH} commands, got {len(commands)}")
        for method, _ in commands.values():
            _check_method(method)
        cmd = {key: f"{method}?{encode_params(params)}" for key, (method, params) in commands.items()}
        return BatchResponse.from_http(self._post("batch", {"halt": 1 if halt else 0, "cmd": cmd}))

    def list_all(self, method: str, params: dict[str, Any] | None = None) -> PagedList:
        """Every page of a *.list method, one call per page; stops early (complete=False) on the first failed page."""
        rows, start = PagedList(), 0
        while True:
            page = self.call(method, {**(params or {}), "start": start})
            if not page.ok or not isinstance(page.result, list):
                rows.complete, rows.failure = False, page
                return rows
            rows.extend(page.result)
            if page.next is None or page.next <= start:
                return rows
            start = page.next

    def _post(self, method: str, payload: dict[str, Any]) -> HttpResult:
        _check_method(method)
        headers = {REQUEST_ID_HEADER: self.request_id} if self.request_id else None
        retries = self.rate_limit_retries if self.acquire is not None else 0  # never again without waiting first
        while True:
            # A limiter that explicitly answers False (no token in time) vetoes the request instead of being ignored.
            if self.acquire is not None and self.acquire() is False:
                return HttpResult(status=None, error_class=LOCAL_RATE_LIMIT, error="local rate limiter gave no token")
            if self.before_send is not None:
                self.before_send()
            result = send(self.session, "POST", f"{self._webhook_url}{method}.json", json=payload, headers=headers)
            if result.status not in RATE_LIMIT_STATUSES:
                return result
            if self.on_rate_limited is not None:
                self.on_rate_limited()
            answer = BitrixResponse.from_http(result)
            if retries <= 0 or not answer.rate_limited or answer.error == "OPERATION_TIME_LIMIT":
                return result
            retries -= 1


def _check_method(method: str) -> None:
    if not _METHOD.match(method):
        raise ValueError(f"invalid Bitrix method name {method!r}")


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
