from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from contacts.models import Contact, Tag
from contacts.tag_manager import ContactTagManager


def own_tags(request) -> QuerySet[Tag]:
    """Only the caller's tags are valid filter values; another user's tag id is a 400."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return Tag.objects.none()
    return Tag.objects.filter(owner=user)


class ContactFilter(django_filters.FilterSet):
    email = django_filters.CharFilter(lookup_expr="icontains", help_text="Part of the address, any case.")
    tag = django_filters.ModelChoiceFilter(
        queryset=own_tags, method="filter_tag", help_text="Id of one of your tags: only its contacts."
    )

    class Meta:
        model = Contact
        fields = ["email", "tag"]

    def filter_tag(self, queryset: QuerySet[Contact], name: str, value: Tag) -> QuerySet[Contact]:
        members = ContactTagManager().contacts_of_tag(value.pk).values("pk")
        return queryset.filter(pk__in=members)


class TagFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains", help_text="Part of the name, any case.")

    class Meta:
        model = Tag
        fields = ["name"]
