"""Which Django e-mail backends a service may name (the EDM_ALLOWED_BACKENDS setting).

A backend path is imported and run by the scheduler, so it is code chosen by
whoever edits the service: only the backends listed are accepted (the model
validator covers the API and the admin), and the scheduler refuses a stored
path that is no longer listed. An entry ``package.*`` allows every dotted path
under that package (``anymail.backends.*``: django-anymail's ESP backends).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError

ALLOWED_SETTING = "EDM_ALLOWED_BACKENDS"
DOTTED_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
DOTTED_PATH_MESSAGE = "must be a dotted path, e.g. anymail.backends.mailgun.EmailBackend"


def backend_allowed(path: str) -> bool:
    for entry in settings.EDM_ALLOWED_BACKENDS:
        if entry.endswith(".*"):
            if path.startswith(entry[:-1]):  # "anymail.backends." : the dot keeps "anymail.backendsx" out
                return True
        elif path == entry:
            return True
    return False


def _problem(path: str) -> str | None:
    """ "invalid", "not_allowed", or None when a service may use ``path``."""
    if not DOTTED_PATH.match(path):
        return "invalid"
    return None if backend_allowed(path) else "not_allowed"


def backend_refusal(path: str) -> str | None:
    """Why a service may not use ``path`` (one readable line), or None when it may."""
    problem = _problem(path)
    if problem == "invalid":
        return f"the backend path {path!r} {DOTTED_PATH_MESSAGE}"
    if problem == "not_allowed":
        return f"the backend {path} is not allowed ({ALLOWED_SETTING}: {_allowed()})"
    return None


def validate_backend_path(value: str) -> None:
    """Model validator of EmailService.backend_path (empty: an SMTP service names none)."""
    problem = _problem(value) if value else None
    if problem == "invalid":
        raise ValidationError(DOTTED_PATH_MESSAGE, code="invalid")
    if problem == "not_allowed":
        raise ValidationError(
            "%(path)s is not an allowed e-mail backend (%(setting)s: %(allowed)s)",
            code="not_allowed",
            params={"path": value, "setting": ALLOWED_SETTING, "allowed": _allowed()},
        )


def _allowed() -> str:
    return ", ".join(settings.EDM_ALLOWED_BACKENDS) or "none"
