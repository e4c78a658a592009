"""One JSON error shape for the whole API, and no 500 for input the caller got wrong.

Every error response is JSON with a ``detail`` message; validation errors also
carry ``errors``: {field: [messages]}. Domain errors raised by the service
functions map onto 400 (invalid input), 404 (unknown object) or 409 (the
object's state does not allow the action) by their base in ``common.errors``; stored
credentials that the configured keys cannot decrypt onto 503.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from common.errors import ConflictError, InputError, NotFoundError
from common.field_keys import FieldKeyError

logger = logging.getLogger(__name__)


def _flatten(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{field}: {_flatten(value)}" for field, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


def _domain_error(exc: Exception) -> exceptions.APIException | None:
    if isinstance(exc, NotFoundError):
        return exceptions.NotFound(str(exc))
    if isinstance(exc, InputError):
        return exceptions.ValidationError(exc.errors or {"detail": [str(exc)]})
    if isinstance(exc, ConflictError):
        conflict = exceptions.APIException(str(exc))
        conflict.status_code = status.HTTP_409_CONFLICT
        return conflict
    if isinstance(exc, DjangoValidationError):
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return exceptions.ValidationError(errors)
    if isinstance(exc, FieldKeyError):
        # The server's keys, not the request, are wrong: a clear 503, never a bare 500.
        logger.error("stored credentials cannot be decrypted", extra={"error": str(exc)})
        unavailable = exceptions.APIException(str(exc))
        unavailable.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return unavailable
    if isinstance(exc, RequestDataTooBig):
        too_big = exceptions.APIException("request body too large")
        too_big.status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        return too_big
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    exc = _domain_error(exc) or exc
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a bug: Django logs it and server_error answers JSON
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        errors = data if isinstance(data, dict) else {"detail": data}
        message = _flatten(errors.get("detail") or errors.get("non_field_errors") or errors)
        response.data = {"detail": message, "errors": errors}
    elif not (isinstance(data, dict) and "detail" in data):
        response.data = {"detail": _flatten(data)}
    return response


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def not_found(request, exception=None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "Internal server error; it has been logged."}, status=500)
    return defaults.server_error(request)


def bad_request(request, exception=None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "Bad request."}, status=400)
    return defaults.bad_request(request, exception)
