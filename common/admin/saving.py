"""An admin base for rows the scheduler writes to while operators edit them."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Model
from django.forms import ModelForm
from django.http import HttpRequest


class SaveChangedFieldsAdmin(admin.ModelAdmin):
    """Saving an existing row writes only the fields the operator changed.

    A full save would put back the counters, next_available_at and statuses
    as the form read them, over what the scheduler has written since.
    """

    def save_model(self, request: HttpRequest, obj: Model, form: ModelForm, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        columns = {field.name for field in obj._meta.concrete_fields}
        fields = [name for name in form.changed_data if name in columns]
        if fields:
            obj.save(update_fields=[*fields, "updated_at"])
