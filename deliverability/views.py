"""The public unsubscribe page: no login, no cookie; a GET asks, only a POST unsubscribes.

Mailbox providers POST ``List-Unsubscribe=One-Click`` to the URL without a
session or a CSRF token (RFC 8058), so the POST is exempt from CSRF checks:
the signed token in the URL is the proof. Link scanners follow GETs, so a GET
only shows a page whose button POSTs.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from deliverability.unsubscribe import (
    BadUnsubscribeToken,
    UnsubscribeOwnerGone,
    unsubscribe_apply,
    unsubscribe_owner_exists,
    unsubscribe_token_read,
)

TEMPLATE = "deliverability/unsubscribe.html"


def _page(request: HttpRequest, state: str, *, email: str = "", status: int = 200) -> HttpResponse:
    response = render(request, TEMPLATE, {"state": state, "email": email}, status=status)
    response["Referrer-Policy"] = "no-referrer"  # the URL is the credential
    response["X-Robots-Tag"] = "noindex"
    return response


@csrf_exempt
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe_view(request: HttpRequest, token: str) -> HttpResponse:
    try:
        link = unsubscribe_token_read(token)
    except BadUnsubscribeToken:
        return _page(request, "invalid", status=400)
    if request.method != "POST":
        if not unsubscribe_owner_exists(link):
            return _page(request, "gone", status=404)
        return _page(request, "confirm", email=link.email)
    try:
        _, created = unsubscribe_apply(link=link)
    except UnsubscribeOwnerGone:
        return _page(request, "gone", status=404)
    return _page(request, "done" if created else "already", email=link.email)
