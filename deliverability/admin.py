from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from deliverability.models import Suppression
from deliverability.suppressions import email_normalise, suppression_add, suppression_remove

SOURCE = "admin"


class SuppressionForm(forms.ModelForm):
    """A new entry: the address is normalised as suppression_add stores it, so the uniqueness check sees it so."""

    class Meta:
        model = Suppression
        fields = ("owner", "email", "reason", "detail")

    def clean_email(self) -> str:
        return email_normalise(self.cleaned_data["email"])  # the form field has validated it


class ScopeFilter(admin.SimpleListFilter):
    title = "list"
    parameter_name = "scope"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("platform", "Platform-wide"), ("owners", "An owner's")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Suppression]) -> QuerySet[Suppression]:
        if self.value() == "platform":
            return queryset.filter(owner__isnull=True)
        if self.value() == "owners":
            return queryset.filter(owner__isnull=False)
        return queryset


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """Added here or over the API, then kept as the record of why: an entry is removed, not edited."""

    form = SuppressionForm
    list_display = ("email", "list_owner", "reason", "source", "created_at")
    list_filter = (ScopeFilter, "reason", "source", "created_at")
    search_fields = ("email", "owner__username")
    list_select_related = ("owner",)
    raw_id_fields = ("owner",)
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="owner", ordering="owner__username")
    def list_owner(self, entry: Suppression) -> str:
        return "(platform-wide)" if entry.owner_id is None else str(entry.owner)

    def get_fields(self, request: HttpRequest, obj: Suppression | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("owner", "email", "reason", "detail")
        return ("owner", "email", "reason", "source", "detail", "task", "subtask", "service", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Suppression | None = None) -> tuple[str, ...]:
        return () if obj is None else self.get_fields(request, obj)

    def save_model(self, request: HttpRequest, obj: Suppression, form: forms.ModelForm, change: bool) -> None:
        if change:
            return  # every field is read-only once added
        entry, _ = suppression_add(
            owner_id=obj.owner_id, email=obj.email, reason=obj.reason, source=SOURCE, detail=obj.detail
        )
        obj.pk = entry.pk  # the admin's redirect and message name the stored entry

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        suppression_remove(entry=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Suppression]) -> None:
        for entry in queryset:
            suppression_remove(entry=entry)
