"""Typed readers for settings taken from the environment.

Each reader fails with an ``EnvError`` naming the variable and what was wrong
with it, so a typo in a deployment stops the process at start instead of
surfacing as odd behaviour later. The entry points (manage.py, edm.wsgi,
edm.asgi, edm.celery, edm.gunicorn_conf) turn it into one line on stderr and
exit status 1 (``edm.startup``).
"""

from __future__ import annotations

import os
import re
import urllib.parse
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email


class EnvError(ImproperlyConfigured):
    """A variable of the environment is missing or malformed.

    The message is one line that names the variable; it never holds a value
    that may be secret (URLs with passwords, keys).
    """


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    return None if value is None else value.strip()


def env_str(name: str, default: str | None = None, *, environ: Mapping[str, str] | None = None) -> str | None:
    value = _raw(name, environ)
    return default if value in (None, "") else value


def env_required(name: str, *, why: str, environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    if not value:
        raise EnvError(f"{name} must be set: {why}")
    return value


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise EnvError(f"{name}={value!r} is not a boolean (use one of 1/0, true/false, yes/no, on/off)")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise EnvError(f"{name}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise EnvError(f"{name}={number} is below the minimum of {minimum}")
    if maximum is not None and number > maximum:
        raise EnvError(f"{name}={number} is above the maximum of {maximum}")
    return number


def env_choice(name: str, default: str, choices: Sequence[str], *, environ: Mapping[str, str] | None = None) -> str:
    """One of ``choices``, compared case-insensitively and returned as spelled there."""
    value = env_str(name, default, environ=environ)
    assert value is not None
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise EnvError(f"{name}={value!r} must be one of {', '.join(choices)}")


def env_list(name: str, default: list[str], *, environ: Mapping[str, str] | None = None) -> list[str]:
    value = _raw(name, environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_timezone(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> str:
    value = env_str(name, default, environ=environ)
    assert value is not None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise EnvError(f"{name}={value!r} is not a known time zone (e.g. UTC, Europe/Berlin)") from None
    return value


def env_database(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    url = env_str(name, default, environ=environ)
    assert url is not None
    try:
        config = dj_database_url.parse(url)
    except (ValueError, KeyError):
        # The message must not echo the URL: it may carry a password.
        scheme = url.split(":", 1)[0]
        raise EnvError(
            f"{name} is not a usable database URL (scheme {scheme!r}); use postgres://user@host:port/name "
            "or sqlite:///path/to/file.sqlite3"
        ) from None
    engine = config.get("ENGINE", "")
    if engine not in {"django.db.backends.postgresql", "django.db.backends.sqlite3"}:
        scheme = url.split(":", 1)[0]
        raise EnvError(f"{name} must point at PostgreSQL (postgres://…) or SQLite (sqlite:///…), not a {scheme!r} URL")
    if not config.get("NAME"):
        raise EnvError(f"{name} names no database (postgres://user@host:port/name)")
    return config


def _scheme(url: str) -> str:
    return url.split(":", 1)[0] if "://" in url else ""


def env_redis_url(name: str, *, environ: Mapping[str, str] | None = None) -> str | None:
    """A Redis URL; the messages name its scheme only, as the URL may carry a password."""
    url = env_str(name, None, environ=environ)
    if url is None:
        return None
    scheme = _scheme(url)
    if scheme not in {"redis", "rediss", "unix"}:
        raise EnvError(f"{name} is not a Redis URL (scheme {scheme!r}); use redis://host:6379/0")
    if scheme != "unix":
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError on a port that is not a number in range
        except ValueError:
            raise EnvError(f"{name} is not a usable Redis URL: its host or port does not parse") from None
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise EnvError(f"{name} is not a usable Redis URL: the database after the last / must be a number")
    return url


def env_broker_url(name: str, default: str | None, *, environ: Mapping[str, str] | None = None) -> str | None:
    """A Celery broker URL (several separated by ;), checked against the transports kombu knows."""
    value = env_str(name, default, environ=environ)
    if value is None:
        return None
    from kombu.transport import TRANSPORT_ALIASES

    for url in value.split(";"):
        scheme = _scheme(url.strip())
        if scheme.partition("+")[0] not in TRANSPORT_ALIASES:
            raise EnvError(
                f"{name} is not a Celery broker URL (scheme {scheme!r}); use e.g. redis://host:6379/0 or amqp://host//"
            )
    return value


def env_basic_auth_list(name: str, *, environ: Mapping[str, str] | None = None) -> list[str]:
    """Comma-separated ``user:password`` pairs (more than one while a secret is being rotated)."""
    pairs = env_list(name, [], environ=environ)
    for pair in pairs:
        user, colon, password = pair.partition(":")
        if not (user and colon and password):
            # The message must not echo the value: it is a secret.
            raise EnvError(f"{name} must be user:password (comma-separated to accept several)")
    return pairs


# What may appear in a URL unescaped (RFC 3986), so the value goes into a mail header as it is.
_URL_CHARS = re.compile(r"^[A-Za-z0-9._~:/@!$&'()*+,;=%-]+$")
MAX_PUBLIC_URL = 200


def env_public_url(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> str:
    """An absolute http(s) base URL (scheme, host, optional port and path), without a trailing slash."""
    value = env_str(name, default, environ=environ)
    assert value is not None
    problem = None
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number in range
    except ValueError:
        problem = "it does not parse"
    else:
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            problem = "it needs http:// or https:// and a host"
        elif parts.query or parts.fragment or "?" in value or "#" in value:
            problem = "it must not have a query or fragment"
        elif parts.username is not None:
            problem = "it must not carry credentials"
        elif not _URL_CHARS.match(value):
            problem = "it has characters a URL must percent-encode (an IDN host must be written in punycode)"
        elif len(value) > MAX_PUBLIC_URL:
            problem = f"it is longer than {MAX_PUBLIC_URL} characters"
    if problem:
        raise EnvError(f"{name}={value!r} is not a usable public base URL: {problem}")
    return value.rstrip("/")


def env_email(name: str, *, environ: Mapping[str, str] | None = None) -> str | None:
    """An ASCII e-mail address, or None when unset."""
    value = env_str(name, None, environ=environ)
    if value is None:
        return None
    try:
        validate_email(value)
    except ValidationError:
        raise EnvError(f"{name}={value!r} is not an e-mail address") from None
    if not value.isascii() or "?" in value or "%" in value:
        raise EnvError(f"{name}={value!r} must be a plain ASCII address (it goes into mail headers)")
    return value


def env_fernet_keys(name: str, *, debug_secret: str | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Comma-separated Fernet keys (the first encrypts, all decrypt).

    Unset: with ``debug_secret`` (DEBUG=1) one key is derived from it; without
    (production) it is an error. The message never echoes a key.
    """
    from common.field_keys import GENERATE_HINT, derived_debug_key, key_problem

    keys = env_list(name, [], environ=environ)
    if not keys:
        if debug_secret is None:
            raise EnvError(
                f"{name} must be set: it encrypts service credentials at rest "
                f"(it may be omitted only with DEBUG=1); generate a key with {GENERATE_HINT}"
            )
        return [derived_debug_key(debug_secret)]
    for position, key in enumerate(keys, start=1):
        if problem := key_problem(key):
            raise EnvError(f"{name}: key {position} of {len(keys)} is {problem}")
    return keys


# A module or class path: identifiers joined by dots.
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def env_backend_list(name: str, default: list[str], *, environ: Mapping[str, str] | None = None) -> list[str]:
    """Comma-separated dotted paths of e-mail backends; ``pkg.mod.*`` allows everything under ``pkg.mod``."""
    entries = env_list(name, default, environ=environ)
    for entry in entries:
        prefix = entry.removesuffix(".*")
        if not _DOTTED.match(prefix) or (prefix == entry and "." not in entry):
            raise EnvError(
                f"{name}: {entry!r} is neither a dotted path (django.core.mail.backends.smtp.EmailBackend) "
                "nor a package followed by .* (anymail.backends.*)"
            )
    return entries


# DRF's rate syntax: requests per period; DRF reads only the period's first letter.
_RATE = re.compile(r"^[0-9]+/(s|sec|second|m|min|minute|h|hour|d|day)$")
_RATE_OFF = {"off", "none"}


def env_rate(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> str | None:
    """A throttle rate such as ``10/min`` (``n/s``, ``n/min``, ``n/hour``, ``n/day``), or None for ``off``."""
    value = env_str(name, default, environ=environ)
    assert value is not None
    if value.lower() in _RATE_OFF:
        return None
    if not _RATE.match(value) or int(value.split("/")[0]) < 1:
        raise EnvError(f"{name}={value!r} is not a rate (use e.g. 10/min, 100/hour, 5/s; off disables)")
    return value


def env_proxy_ssl_header(
    name: str, default: str | None, *, environ: Mapping[str, str] | None = None
) -> tuple[str, str] | None:
    """The request header (``HTTP_X_FORWARDED_PROTO``) a TLS-terminating proxy sets to ``https``; ``off``: none."""
    value = env_str(name, default, environ=environ)
    if value is None or value.lower() in _RATE_OFF | {"0", "false", "no"}:
        return None
    if not re.fullmatch(r"HTTP_[A-Z0-9_]+", value):
        raise EnvError(f"{name}={value!r} is not a request header as Django names it (e.g. HTTP_X_FORWARDED_PROTO)")
    return (value, "https")
