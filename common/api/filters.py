"""Filter pieces every app's API shares."""

from __future__ import annotations

import datetime as dt

import django_filters
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField


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
            raise ValidationError("Enter a date/time between the years 1 and 9999 in UTC.", code="invalid") from None


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField
