from __future__ import annotations

import django_filters

from common.api.filters import IsoDateTimeFilter
from deliverability.models import Suppression


class SuppressionFilter(django_filters.FilterSet):
    email = django_filters.CharFilter(lookup_expr="icontains", help_text="Part of the address, any case.")
    reason = django_filters.ChoiceFilter(choices=Suppression.Reason.choices)
    source = django_filters.CharFilter(help_text="Where the entry came from: api, import, admin, smtp, ...")
    created_after = IsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="Added at or after this moment (ISO 8601)."
    )
    created_before = IsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", help_text="Added before this moment (ISO 8601)."
    )

    class Meta:
        model = Suppression
        fields = ["email", "reason", "source", "created_after", "created_before"]
