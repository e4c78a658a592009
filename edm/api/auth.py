"""``POST /api/auth/token/``: a user's API token for their username and password, with failed logins throttled."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, parsers
from rest_framework.authtoken import serializers
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.parsers import LimitedJSONParser
from common.api.strict_input import StrictInputMixin
from common.api.throttles import AnonRateThrottle, LoginFailureThrottle


class AuthTokenSerializer(StrictInputMixin, serializers.AuthTokenSerializer):
    """A username and password; anything else in the body is refused."""


class TokenView(ObtainAuthToken):
    # The JSON parser with the API's size and depth bounds (DRF's would take any body).
    parser_classes = (LimitedJSONParser, parsers.FormParser, parsers.MultiPartParser)
    serializer_class = AuthTokenSerializer
    # DRF's view has no throttles at all; password guessing is what this one must stop.
    throttle_classes = (LoginFailureThrottle, AnonRateThrottle)

    @extend_schema(
        summary="Get your API token",
        description=(
            "Wrong credentials are a 400 (`non_field_errors`), and no token is given. After "
            "`EDM_THROTTLE_LOGIN` failed logins (default 10 a minute) for one username from one address, "
            "every attempt is a 429 with `Retry-After` until the window has passed."
        ),
        request=AuthTokenSerializer,
        responses={200: AuthTokenSerializer},
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().post(request, *args, **kwargs)  # wrong credentials raise: the attempt stays counted
        LoginFailureThrottle.succeeded(request)
        return response

    def throttled(self, request: Request, wait: float | None) -> None:
        # DRF appends "Expected available in N seconds." (the Retry-After header says the same).
        raise exceptions.Throttled(wait, detail="Too many failed logins from this address for this username.")
