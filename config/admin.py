"""Configuration in the admin: every change validated and recorded through ConfigManagerService.

Rows exist only for settings that differ from their declared default; adding
one overrides the default, deleting one (or the "reset" action) goes back to it.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from common.admin.readonly import ReadOnlyAdmin
from config.models import ConfigChange, ConfigItem
from config.registry import REGISTRY, ConfigValidationError
from config.services import ConfigManagerService

SOURCE = ConfigChange.Source.ADMIN


def _setting_label(setting) -> str:
    bounds = []
    if setting.minimum is not None:
        bounds.append(f"≥ {setting.minimum:g}")
    if setting.maximum is not None:
        bounds.append(f"≤ {setting.maximum:g}")
    if setting.choices:
        bounds.append(" | ".join(setting.choices))
    limits = f", {' '.join(bounds)}" if bounds else ""
    return f"{setting.name} ({setting.type.__name__}, default {setting.default!r}{limits})"


class ConfigItemForm(forms.ModelForm):
    setting = forms.ChoiceField(choices=(), help_text="The setting to override.")
    value = forms.CharField(
        help_text="A number, true/false, or text. JSON is accepted too (a quoted string stays a string).",
    )

    class Meta:
        model = ConfigItem
        fields = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["setting"].choices = [(s.name, _setting_label(s)) for s in REGISTRY.values()]
        if not self.instance._state.adding:
            self.fields["setting"].initial = f"{self.instance.category}.{self.instance.key}"
            self.fields["setting"].disabled = True
            self.fields["value"].initial = json.dumps(self.instance.value)
            setting = REGISTRY.get((self.instance.category, self.instance.key))
            if setting:
                self.fields["value"].help_text = setting.description

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        name, raw = cleaned.get("setting"), cleaned.get("value")
        if not name or raw is None:
            return cleaned
        category, _, key = name.partition(".")
        setting = REGISTRY[(category, key)]
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw  # plain text, e.g. a time zone name
        try:
            cleaned["typed_value"] = setting.clean(value)
        except ConfigValidationError as exc:
            self.add_error("value", str(exc))
        cleaned["category"], cleaned["key"] = category, key
        return cleaned


@admin.register(ConfigItem)
class ConfigItemAdmin(admin.ModelAdmin):
    form = ConfigItemForm
    list_display = ("category", "key", "value", "default", "updated_by", "updated_at")
    list_filter = ("category",)
    search_fields = ("category", "key")
    actions = ("reset_to_default",)

    @admin.display(description="default")
    def default(self, obj: ConfigItem) -> str:
        setting = REGISTRY.get((obj.category, obj.key))
        return repr(setting.default) if setting else "(unknown setting)"

    def save_model(self, request: HttpRequest, obj: ConfigItem, form: ConfigItemForm, change: bool) -> None:
        # Through the service: validated again, recorded in config_changes, caches invalidated.
        data = form.cleaned_data
        ConfigManagerService.set_config(
            data["category"], data["key"], data["typed_value"], user=request.user, source=SOURCE
        )
        saved = ConfigItem.objects.get(category=data["category"], key=data["key"])
        obj.pk, obj.category, obj.key, obj.value = saved.pk, saved.category, saved.key, saved.value

    def delete_model(self, request: HttpRequest, obj: ConfigItem) -> None:
        ConfigManagerService.reset_config(obj.category, obj.key, user=request.user, source=SOURCE)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ConfigItem]) -> None:
        for item in queryset:
            self.delete_model(request, item)

    @admin.action(description="Reset the selected settings to their defaults")
    def reset_to_default(self, request: HttpRequest, queryset: QuerySet[ConfigItem]) -> None:
        names = []
        for item in queryset:
            if ConfigManagerService.reset_config(item.category, item.key, user=request.user, source=SOURCE):
                names.append(f"{item.category}.{item.key}")
        self.message_user(request, f"Reset to default: {', '.join(names) or 'nothing'}.", messages.SUCCESS)


@admin.register(ConfigChange)
class ConfigChangeAdmin(ReadOnlyAdmin):
    list_display = ("changed_at", "category", "key", "old_value", "new_value", "changed_by", "source")
    list_filter = ("category", "source", "changed_at")
    search_fields = ("category", "key", "changed_by__username")
    list_select_related = ("changed_by",)
    date_hierarchy = "changed_at"
