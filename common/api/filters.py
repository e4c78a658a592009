"""Filter pieces every app's API shares."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django_filters import rest_framework
from django_filters.fields import IsoDateTimeField
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.views import APIView


class UTCDateTimeField(IsoDateTimeField):
    """An ISO 8601 moment, handed to the query in UTC.

    9999-12-31T23:00-14:00 would overflow, and PostgreSQL refuses offsets
    beyond ±15:59 that Python accepts (a 500 either way, without this).
    """

    def to_python(self, value):
        try:
            moment = super().to_python(value)
            return moment.astimezone(dt.UTC) if moment is not None else None
        except OverflowError:
            raise DjangoValidationError(
                "Enter a date/time between the years 1 and 9999 in UTC.", code="invalid"
            ) from None


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField


EMPTY = "must not be empty: leave the parameter out instead"


def refuse_empty(params: Mapping[str, Any], names: Iterable[str]) -> None:
    """An empty ``?since=`` is a 400: it is neither a value nor the parameter left out."""
    empty = {name: [EMPTY] for name in names if name in params and params.get(name) == ""}
    if empty:
        raise ValidationError(empty)


class DjangoFilterBackend(rest_framework.DjangoFilterBackend):
    """django-filter's backend, but an empty filter value is refused (django-filter would skip the filter)."""

    def filter_queryset(self, request: Request, queryset: QuerySet, view: APIView) -> QuerySet:
        filterset = self.get_filterset(request, queryset, view)
        if filterset is not None:
            refuse_empty(request.query_params, filterset.filters)
        return super().filter_queryset(request, queryset, view)


class NonEmptyQueryMixin:
    """For serializers that read query parameters: an empty value is a 400, not the default."""

    def to_internal_value(self, data: Any) -> Any:
        refuse_empty(data, self.fields)  # type: ignore[attr-defined]
        return super().to_internal_value(data)  # type: ignore[misc]


class _TrueOrFalseField(forms.TypedChoiceField):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(choices=[("true", "true"), ("false", "false")], coerce=lambda value: value == "true")
        super().__init__(*args, **kwargs)


@extend_schema_field({"type": "boolean"})
class StrictBooleanFilter(django_filters.Filter):
    """``true`` or ``false`` as the schema writes them; ``1``, ``yes`` or ``True`` are a 400."""

    field_class = _TrueOrFalseField
