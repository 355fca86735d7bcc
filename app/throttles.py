"""Throttles on authentication (DRF): per client address and per username, rates in settings.

Counters live in the shared cache (Redis), so every web process counts together. A cache outage must not lock every
user out: the throttle then lets the request through and logs a warning."""

import hashlib
import logging

from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

log = logging.getLogger("app.throttles")


class _FailOpen(SimpleRateThrottle):
    def get_rate(self) -> str:
        # Read at request time (SimpleRateThrottle reads the rates once at import), so a changed setting applies.
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError:
            raise ImproperlyConfigured(f"Set REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['{self.scope}'].") from None

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception:  # noqa: BLE001 - the cache is down: logins still work, unthrottled, and we say so
            log.warning("%s: cache unavailable, request not throttled", type(self).__name__, exc_info=True)
            return True


class LoginAddressThrottle(_FailOpen):
    """Login attempts per client address (REMOTE_ADDR, or X-Forwarded-For behind NUM_PROXIES trusted proxies)."""

    scope = "login"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginUsernameThrottle(_FailOpen):
    """Login attempts per username, whatever address they come from (a distributed guess at one account)."""

    scope = "login_username"

    def get_cache_key(self, request, view) -> str | None:
        username = request.data.get("username") if hasattr(request.data, "get") else None
        if not isinstance(username, str) or not username.strip():
            return None  # nothing to count: the serializer answers 400
        # Hashed: the key stays short and cache-safe whatever was typed, and no username sits in the cache.
        ident = hashlib.sha256(username.strip().lower().encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}
