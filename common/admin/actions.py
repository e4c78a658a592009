"""Admin actions that apply a service function to each selected object and report the outcomes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import model_ngettext
from django.db.models import QuerySet
from django.http import HttpRequest

# What one object's run returned: an outcome name, or the name and an amount
# to add up (e.g. how many subtasks a cancel touched).
Result = str | tuple[str, int]


def apply_to_each(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    apply: Callable[[Any], Result],
    reports: dict[str, tuple[int, str]],
    refused: tuple[type[Exception], ...] = (),
) -> None:
    """Run ``apply`` on every object; one message per outcome, one warning per refused object.

    ``reports`` maps an outcome to its message level and text; the text may use
    {count} (objects with that outcome), {objects} (their verbose name) and
    {total} (the amounts added up). An exception in ``refused`` stops only
    the object that raised it: the others still proceed.
    """
    counts: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for obj in queryset:
        try:
            result = apply(obj)
        except refused as exc:
            modeladmin.message_user(request, f"{obj}: {exc}", messages.WARNING)
            continue
        outcome, amount = (result, 0) if isinstance(result, str) else result
        counts[outcome] += 1
        totals[outcome] += amount
    for outcome, (level, text) in reports.items():
        if counts[outcome]:
            objects = model_ngettext(queryset, counts[outcome])
            message = text.format(count=counts[outcome], objects=objects, total=totals[outcome])
            modeladmin.message_user(request, message, level)


class OneAtATimeDeleteAdmin(admin.ModelAdmin):
    """No bulk "delete selected": deletes go one object at a time through a service function.

    Django's bulk action reports success even where the service function would
    refuse (mail in flight, history to keep); the delete page, or an action of
    the admin's own, reports each refusal with its reason.
    """

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions
