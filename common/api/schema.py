"""The OpenAPI schema says what the API really does: its error answers, and its body rules.

AutoSchema (REST_FRAMEWORK's DEFAULT_SCHEMA_CLASS) adds to every operation the
error responses it can give, with the JSON error body of common.api.errors, from
what the view is made of instead of a list kept by hand:

| status | documented when |
|---|---|
| 400 | the operation reads a body or query parameters |
| 401 | the view authenticates the caller (a bad or missing token) |
| 403 | staff-only views, a view's ``forbidden_reason``; writes from a browser session without a CSRF token |
| 404 | the path names an object, or the list is paginated (a page past the end) |
| 409 | declared by the view (``conflict(...)``): the object's state refuses the action |
| 413, 415 | the operation reads a body (too large; a media type it does not take) |
| 429 | the view throttles |

Request bodies of StrictInputMixin serializers (common.api.strict_input) get
``additionalProperties: false``, and a PUT body gets a component of its own
(``…ReplaceRequest``) that requires every writable field.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi
from drf_spectacular.plumbing import force_instance, is_serializer
from drf_spectacular.utils import OpenApiResponse
from rest_framework import permissions, serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from common.api.strict_input import StrictInputMixin

# Query parameters an empty value is fine for (no ordering: the default one); every other is refused empty.
MAY_BE_EMPTY = {"ordering"}
# Django and DRF refuse a NUL character in any text (PostgreSQL cannot store one): the schema says so.
NO_NUL = "^[^\\x00]*$"


class ErrorSerializer(serializers.Serializer):
    """Every error answer of the API."""

    detail = serializers.CharField(help_text="What went wrong, in one message.")
    errors = serializers.DictField(
        required=False,
        help_text="Invalid input (400) only: the messages by field name; 'detail' or 'non_field_errors' "
        "for those that concern no one field.",
    )

    class Meta:
        ref_name = "Error"


def conflict(description: str) -> OpenApiResponse:
    """A documented 409: the object's state does not allow the request."""
    return OpenApiResponse(ErrorSerializer, description=description)


class AutoSchema(openapi.AutoSchema):
    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        for parameter in operation.get("parameters", []):
            schema = parameter.get("schema", {})
            if parameter["in"] == "query" and schema.get("type") == "string" and parameter["name"] not in MAY_BE_EMPTY:
                schema.setdefault("minLength", 1)  # see common.api.filters.refuse_empty
            if parameter["in"] == "query" and _free_text(schema) and parameter["name"] not in MAY_BE_EMPTY:
                schema["pattern"] = NO_NUL
        responses = operation["responses"]
        for code, description in self._error_responses(operation).items():
            responses.setdefault(code, {"description": description})
        for code, response in responses.items():
            if code.startswith("4") and "content" not in response:  # a view's error without a body schema
                error = OpenApiResponse(ErrorSerializer, response.get("description") or "Error.")
                responses[code] = self._get_response_for_code(error, code)
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _error_responses(self, operation: dict[str, Any]) -> dict[str, str]:
        has_body = "requestBody" in operation
        has_query = any(param["in"] == "query" for param in operation.get("parameters", []))
        codes: dict[str, str] = {}
        if has_body or has_query:
            codes["400"] = "Invalid input: `errors` names each refused field (or parameter) with its messages."
        if self._authenticates():
            codes["401"] = "No valid credentials: the token (or session) is missing, unknown or expired."
        if forbidden := self._forbidden():
            codes["403"] = forbidden
        format_override = any(
            param["name"] == api_settings.URL_FORMAT_OVERRIDE for param in operation.get("parameters", [])
        )
        paginated = self.method == "GET" and self._is_list_view() and self._get_paginator()
        if "{" in self.path or paginated or format_override:
            codes["404"] = "No such object (or not one of yours), a page past the last one, or an unknown `format`."
        if has_body:
            codes["413"] = "The request body is larger than the API accepts."
            codes["415"] = "The request body's Content-Type is not one the operation reads."
        if self.view.get_throttles():
            codes["429"] = "Too many requests: wait as long as the Retry-After header says."
        return codes

    def _authenticates(self) -> bool:
        # A view may skip authentication (the health check answers while the database is down).
        skips = type(self.view).perform_authentication is not APIView.perform_authentication
        return bool(self.view.get_authenticators()) and not skips

    def _forbidden(self) -> str:
        reasons = [reason] if (reason := getattr(self.view, "forbidden_reason", "")) else []
        if any(isinstance(perm, permissions.IsAdminUser) for perm in self.view.get_permissions()):
            reasons.append("staff only")
        session = any(isinstance(auth, SessionAuthentication) for auth in self.view.get_authenticators())
        if session and self.method not in permissions.SAFE_METHODS and self._authenticates():
            reasons.append("a write from a browser session needs a CSRF token")
        return ("Not allowed: " + "; ".join(reasons) + ".") if reasons else ""

    def _get_request_for_media_type(self, serializer: Any, direction: str = "request") -> Any:
        if self.method in ("PUT", "PATCH") and _is_strict(serializer):
            serializer = force_instance(serializer)
            serializer = type(serializer)(context=serializer.context)  # fresh: its fields are built for this mode
            serializer.schema_mode = "replace" if self.method == "PUT" else "patch"
        return super()._get_request_for_media_type(serializer, direction)

    def get_serializer_name(self, serializer: serializers.Serializer, direction: str) -> str:
        name = super().get_serializer_name(serializer, direction)
        if direction == "request" and getattr(serializer, "schema_mode", None) == "replace":
            return f"{name.removesuffix('Serializer')}Replace"
        return name

    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and _is_strict(serializer):
            schema["additionalProperties"] = False
        if direction == "request":
            for prop in schema.get("properties", {}).values():
                if _free_text(prop):
                    prop["pattern"] = NO_NUL
        return schema


def _free_text(schema: dict[str, Any]) -> bool:
    """A string with no format, choices or pattern of its own (those say what it may hold already)."""
    return schema.get("type") == "string" and not ({"format", "enum", "pattern"} & set(schema))


def _is_strict(serializer: Any) -> bool:
    strict = isinstance(serializer, StrictInputMixin)
    strict = strict or (isinstance(serializer, type) and issubclass(serializer, StrictInputMixin))
    return strict and (is_serializer(serializer) or isinstance(serializer, type))
