from __future__ import annotations

import django_filters
from django import forms
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema_field

from common.api.filters import IsoDateTimeFilter, StrictBooleanFilter
from queues.models import EmailService, SubTask, Task

SMALLINT = {"min_value": -32768, "max_value": 32767}


class IntegerFilter(django_filters.NumberFilter):
    """Whole numbers only (NumberFilter would take 1.5 and round it)."""

    field_class = forms.IntegerField


@extend_schema_field({"type": "integer", "minimum": SMALLINT["min_value"], "maximum": SMALLINT["max_value"]})
class PriorityFilter(IntegerFilter):
    """A priority: the bounds are in the schema too."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **SMALLINT, **kwargs)


def own_tasks(request) -> QuerySet[Task]:
    """Only the caller's tasks are valid filter values; another user's task id is a 400."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return Task.objects.none()
    return Task.objects.filter(owner=user)


class TaskFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Task.Status.choices)
    priority = PriorityFilter()
    priority_min = PriorityFilter(field_name="priority", lookup_expr="gte")
    priority_max = PriorityFilter(field_name="priority", lookup_expr="lte")
    created_after = IsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="Created at or after this moment (ISO 8601)."
    )
    created_before = IsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", help_text="Created before this moment (ISO 8601)."
    )

    class Meta:
        model = Task
        fields = ["status", "priority", "priority_min", "priority_max", "created_after", "created_before"]


class SubTaskFilter(django_filters.FilterSet):
    task = django_filters.ModelChoiceFilter(queryset=own_tasks, help_text="Id of one of your tasks.")
    status = django_filters.ChoiceFilter(choices=SubTask.Status.choices)
    recipient = django_filters.CharFilter(
        field_name="recipient_email", lookup_expr="icontains", help_text="Part of the address, any case."
    )

    class Meta:
        model = SubTask
        fields = ["task", "status", "recipient"]


class EmailServiceFilter(django_filters.FilterSet):
    is_enabled = StrictBooleanFilter()
    transport = django_filters.ChoiceFilter(choices=EmailService.Transport.choices)

    class Meta:
        model = EmailService
        fields = ["is_enabled", "transport"]
