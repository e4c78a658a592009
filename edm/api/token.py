"""``POST /api/auth/token/``: an integrator's token for a username and password."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import parsers
from rest_framework.authtoken import serializers
from rest_framework.authtoken.views import ObtainAuthToken

from edm.api.parsers import LimitedJSONParser
from edm.api.strict_input import StrictInputMixin


class AuthTokenSerializer(StrictInputMixin, serializers.AuthTokenSerializer):
    """A username and password; anything else in the body is refused."""


class TokenView(ObtainAuthToken):
    # The JSON parser with the API's size and depth bounds (DRF's would take any body).
    parser_classes = (LimitedJSONParser, parsers.FormParser, parsers.MultiPartParser)
    serializer_class = AuthTokenSerializer

    @extend_schema(
        summary="Get your API token",
        description="Wrong credentials are a 400 (`non_field_errors`), and no token is given.",
        request=AuthTokenSerializer,
        responses={200: AuthTokenSerializer},
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)
