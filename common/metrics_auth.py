"""Who may read the Prometheus metrics: the web's ``/metrics`` and each scheduler's metrics port.

Scrapers authenticate with a bearer token (``EDM_METRICS_TOKEN``), with HTTP
basic auth (``EDM_METRICS_USER`` / ``EDM_METRICS_PASSWORD``), or with either
when both are configured. With neither configured the metrics are open under
``DEBUG`` (a developer's machine) and refused otherwise: the figures name the
sending services and show the queue, which is nobody's business outside the
operators, and an open endpoint that nobody notices stays open.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

REALM = "metrics"
UNCONFIGURED_HINT = (
    "metrics are refused: no credentials are configured; set EDM_METRICS_TOKEN "
    "(or EDM_METRICS_USER and EDM_METRICS_PASSWORD) and give the same to the scraper"
)
UNAUTHORIZED_MESSAGE = "metrics need credentials: Authorization: Bearer <EDM_METRICS_TOKEN> or basic auth"


class Verdict(enum.Enum):
    ALLOW = "allow"
    UNAUTHORIZED = "unauthorized"  # 401: credentials missing or wrong
    UNCONFIGURED = "unconfigured"  # 403: nothing configured outside DEBUG


@dataclass(frozen=True)
class MetricsCredentials:
    token: str | None
    user: str | None
    password: str | None
    open_without_credentials: bool

    @classmethod
    def from_settings(cls) -> MetricsCredentials:
        """Read now: a long-running process takes them once, at start."""
        return cls(
            token=settings.EDM_METRICS_TOKEN,
            user=settings.EDM_METRICS_USER,
            password=settings.EDM_METRICS_PASSWORD,
            open_without_credentials=settings.DEBUG,
        )

    @property
    def configured(self) -> bool:
        return bool(self.token or (self.user and self.password))

    def check(self, authorization: str | None) -> Verdict:
        """What to do with a request carrying this ``Authorization`` header (None when absent)."""
        if not self.configured:
            return Verdict.ALLOW if self.open_without_credentials else Verdict.UNCONFIGURED
        scheme, _, value = (authorization or "").strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self.token and _same(value, self.token):
            return Verdict.ALLOW
        if scheme == "basic" and self.user and self.password and self._basic_matches(value):
            return Verdict.ALLOW
        return Verdict.UNAUTHORIZED

    def _basic_matches(self, value: str) -> bool:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, colon, password = decoded.partition(":")
        # Both compared whatever the first gives, so the timing tells nothing about which was wrong.
        user_ok = _same(user, self.user or "")
        password_ok = _same(password, self.password or "")
        return bool(colon) and user_ok and password_ok

    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of a 401: the schemes this process accepts."""
        schemes = []
        if self.user and self.password:
            schemes.append(f'Basic realm="{REALM}", charset="UTF-8"')
        if self.token:
            schemes.append(f'Bearer realm="{REALM}"')
        return ", ".join(schemes)

    def client_headers(self) -> dict[str, str]:
        """The header a client of this deployment sends (the token when there is one), or none."""
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.user and self.password:
            pair = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
            return {"Authorization": f"Basic {pair}"}
        return {}


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def refusal(credentials: MetricsCredentials, verdict: Verdict) -> tuple[int, dict[str, str], str]:
    """Status, headers and plain-text body of a refused request."""
    if verdict is Verdict.UNCONFIGURED:
        return 403, {}, UNCONFIGURED_HINT + "\n"
    return 401, {"WWW-Authenticate": credentials.challenge()}, UNAUTHORIZED_MESSAGE + "\n"


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def protected_wsgi_app(app: WsgiApp, credentials: MetricsCredentials) -> WsgiApp:
    """``app`` behind the same check as /metrics (the scheduler's metrics port)."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        verdict = credentials.check(environ.get("HTTP_AUTHORIZATION"))
        if verdict is Verdict.ALLOW:
            return app(environ, start_response)
        code, headers, body = refusal(credentials, verdict)
        reason = "Forbidden" if code == 403 else "Unauthorized"
        payload = body.encode("utf-8")
        start_response(
            f"{code} {reason}",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(payload))), *headers.items()],
        )
        return [payload]

    return guarded
