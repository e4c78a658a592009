"""Per-user visibility for API views: a user's objects only, everyone else's are a 404."""

from __future__ import annotations

from django.db.models import Model, QuerySet

from common.api.parsers import LimitedJSONParser

# JSON only, with a size and depth bound: one documented body format per operation.
PARSERS = [LimitedJSONParser]


class OwnerScopedMixin:
    """Restrict a view's queryset to rows whose ``owner_field`` is the caller.

    Filtering the queryset (instead of checking a permission per object) makes
    another user's object indistinguishable from one that does not exist: a
    404, never a 403 that would confirm the id. Staff are no exception: they
    see everything in the Django admin, and an integrator's API key that
    happens to belong to a staff user should not start acting on other
    users' mailings.
    """

    owner_field = "owner"
    parser_classes = PARSERS

    def get_queryset(self) -> QuerySet[Model]:
        queryset = super().get_queryset()  # type: ignore[misc]
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return queryset.none()
        return queryset.filter(**{self.owner_field: self.request.user})  # type: ignore[attr-defined]
