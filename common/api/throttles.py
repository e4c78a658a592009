"""Request throttles of the API, counted in Django's default cache.

With ``REDIS_URL`` set that cache is Redis, so every gunicorn worker and every
web container counts against the same limits; without it each process counts
alone (local memory). Rates come from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``
(``EDM_THROTTLE_*``). A cache that does not answer lets requests through (and
logs it): a Redis outage must not take the API down with it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from django.core.cache import cache
from redis.exceptions import RedisError
from rest_framework import throttling
from rest_framework.request import Request
from rest_framework.settings import api_settings

logger = logging.getLogger(__name__)

_CACHE_ERRORS = (RedisError, OSError)
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _FailOpen:
    """DRF's rate throttles, letting requests through while the cache is unreachable."""

    @property
    def THROTTLE_RATES(self) -> dict[str, str | None]:
        # DRF binds the rates when its module is imported; read them now, so changed settings apply.
        return api_settings.DEFAULT_THROTTLE_RATES

    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return super().allow_request(request, view)  # type: ignore[misc]
        except _CACHE_ERRORS as exc:
            logger.warning("throttle cache unavailable, request let through", extra={"error": type(exc).__name__})
            return True


class AnonRateThrottle(_FailOpen, throttling.AnonRateThrottle):
    """Unauthenticated requests per client address (``EDM_THROTTLE_ANON``)."""


class UserRateThrottle(_FailOpen, throttling.UserRateThrottle):
    """Requests per user (per client address when anonymous) (``EDM_THROTTLE_USER``)."""


class LoginFailureThrottle(throttling.BaseThrottle):
    """Failed logins per client address and username (``EDM_THROTTLE_LOGIN``, e.g. ``10/min``).

    Each attempt is counted before the password is checked (one atomic
    increment, so parallel guesses cannot slip past the limit) and taken back
    when the login succeeds: only failures add up, and the attempt after the
    limit is refused until the window that the first failure opened has passed.
    """

    scope = "login"

    def __init__(self) -> None:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        self.limit, self.window = _parse_rate(rate) if rate else (0, 0)
        self.retry_after: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        if not self.limit:
            return True
        key = self._key(request)
        try:
            count, started = self._count_attempt(key)
        except _CACHE_ERRORS as exc:
            logger.warning("login throttle cache unavailable, attempt let through", extra={"error": type(exc).__name__})
            return True
        if count > self.limit:
            self.retry_after = max(1.0, started + self.window - time.time())
            return False
        request._login_throttle_key = key  # taken back by succeeded() when the password was right
        return True

    def wait(self) -> float | None:
        return self.retry_after

    @staticmethod
    def succeeded(request: Request) -> None:
        """The login worked: its attempt does not count as a failure."""
        key = getattr(request, "_login_throttle_key", None)
        if key is None:
            return
        try:
            cache.decr(f"{key}:n")
        except (ValueError, *_CACHE_ERRORS):
            pass  # the window expired meanwhile (ValueError: no such key), or the cache is gone: nothing to undo

    def _key(self, request: Request) -> str:
        username = str(request.data.get("username", "")) if hasattr(request.data, "get") else ""
        # Hashed: a username is chosen by the client and may be long or odd; the key stays short and plain.
        digest = hashlib.sha256(f"{self.get_ident(request)}\0{username.casefold()}".encode()).hexdigest()
        return f"throttle:login:{digest}"

    def _count_attempt(self, key: str) -> tuple[int, float]:
        now = time.time()
        # The first failure opens the window; both keys expire with it.
        cache.add(f"{key}:start", now, timeout=self.window)
        cache.add(f"{key}:n", 0, timeout=self.window)
        try:
            count = cache.incr(f"{key}:n")
        except ValueError:  # expired between add() and incr()
            cache.add(f"{key}:n", 1, timeout=self.window)
            count = 1
        started = cache.get(f"{key}:start", now)
        return count, started


def _parse_rate(rate: str) -> tuple[int, int]:
    number, period = rate.split("/")
    return int(number), _PERIODS[period[0]]
