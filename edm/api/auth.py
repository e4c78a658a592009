"""``POST /api/auth/token/``: a user's API token for their username and password, with failed logins throttled."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.request import Request
from rest_framework.response import Response

from edm.api.throttles import AnonRateThrottle, LoginFailureThrottle


class TokenView(ObtainAuthToken):
    # DRF's view has no throttles at all; password guessing is what this one must stop.
    throttle_classes = (LoginFailureThrottle, AnonRateThrottle)

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().post(request, *args, **kwargs)  # wrong credentials raise: the attempt stays counted
        LoginFailureThrottle.succeeded(request)
        return response

    def throttled(self, request: Request, wait: float | None) -> None:
        # DRF appends "Expected available in N seconds." (the Retry-After header says the same).
        raise exceptions.Throttled(wait, detail="Too many failed logins from this address for this username.")
