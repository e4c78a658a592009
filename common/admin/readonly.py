"""A base for admins of rows that the system writes (alerts, heartbeats, send attempts): staff only look."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest


def all_fields(model: type[Model], exclude: Iterable[str] = ()) -> tuple[str, ...]:
    """Every concrete field of the model, to show all of them read-only on the detail page."""
    skip = set(exclude)
    return tuple(f.name for f in model._meta.get_fields() if f.concrete and f.name not in skip)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Nobody adds, edits or deletes these rows here; actions may still change them through services."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
