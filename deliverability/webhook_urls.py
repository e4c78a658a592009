"""anymail's ESP tracking webhook URLs, refused unless they can be authenticated.

anymail only warns when ``WEBHOOK_SECRET`` is unset and then accepts anyone's
posts; here every webhook answers 403 until ``ANYMAIL_WEBHOOK_SECRET`` is set,
so no unauthenticated request reaches the suppression list. An ESP whose own
signing key is missing (anymail raises a configuration error) is refused the
same way, and logged. Only the tracking webhooks are mounted: inbound mail is
not handled here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps

from anymail import urls as anymail_urls
from anymail.exceptions import AnymailConfigurationError
from anymail.utils import get_anymail_setting
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern
from django.views.decorators.csrf import csrf_exempt

logger = logging.getLogger(__name__)

app_name = anymail_urls.app_name


def webhook_secret_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """``view``, answering 403 (and recording nothing) while the webhook is not configured."""

    @csrf_exempt
    @wraps(view)
    def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not get_anymail_setting("webhook_secret", default=None):
            logger.warning("ESP webhook refused: ANYMAIL_WEBHOOK_SECRET is not set", extra={"path": request.path})
            return JsonResponse({"detail": "ESP webhooks are not configured on this server."}, status=403)
        try:
            return view(request, *args, **kwargs)
        except AnymailConfigurationError as exc:
            logger.error("ESP webhook refused: %s", exc, extra={"path": request.path})
            return JsonResponse({"detail": "This ESP's webhook is not configured on this server."}, status=403)

    return guarded


def _is_tracking(pattern: URLPattern) -> bool:
    # Mandrill posts tracking and inbound events to one combined URL.
    return pattern.name.endswith("_tracking_webhook") or pattern.name == "mandrill_webhook"


urlpatterns = [
    URLPattern(pattern.pattern, webhook_secret_required(pattern.callback), pattern.default_args, pattern.name)
    for pattern in anymail_urls.urlpatterns
    if _is_tracking(pattern)
]
