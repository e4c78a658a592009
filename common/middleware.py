"""Pages that meet stored credentials the configured keys cannot decrypt answer a clear 503, not a bare 500."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from common.field_keys import FieldKeyError

logger = logging.getLogger(__name__)


class FieldKeyErrorMiddleware:
    """The admin and the dashboard read services whole: with the wrong EDM_FIELD_KEYS they cannot.

    The API answers the same 503 through its exception handler (common.api.errors);
    this covers every other page, their template rendering included.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, FieldKeyError):
            return None
        logger.error("stored credentials cannot be decrypted", extra={"path": request.path, "error": str(exception)})
        return HttpResponse(
            f"503 Service Unavailable: {exception}. Set EDM_FIELD_KEYS to include the key the credentials "
            "were written with (see README, Credentials at rest).\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
