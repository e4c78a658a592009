"""Deployment checks (``manage.py check --deploy``) for what recipients see of this site."""

from __future__ import annotations

import urllib.parse

from django.conf import settings
from django.core.checks import Tags, Warning, register

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


@register(Tags.security, deploy=True)
def public_url_check(app_configs, **kwargs) -> list[Warning]:
    """Unsubscribe links must reach this site from the recipients' side, over https for one-click (RFC 8058)."""
    url = settings.EDM_PUBLIC_URL
    parts = urllib.parse.urlsplit(url)
    if parts.hostname in _LOCAL_HOSTS:
        return [
            Warning(
                f"EDM_PUBLIC_URL is {url}: recipients cannot open the unsubscribe links in sent mail",
                hint="Set EDM_PUBLIC_URL to the public https address of this site.",
                id="deliverability.W001",
            )
        ]
    if parts.scheme != "https":
        return [
            Warning(
                f"EDM_PUBLIC_URL is {url}: mailbox providers offer one-click unsubscribe only for https links",
                hint="Serve this site over https and set EDM_PUBLIC_URL to that address.",
                id="deliverability.W002",
            )
        ]
    return []
