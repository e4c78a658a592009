from django.contrib import admin

from config.models import ConfigItem


@admin.register(ConfigItem)
class ConfigItemAdmin(admin.ModelAdmin):
    list_display = ("category", "key", "value", "updated_by", "updated_at")
    list_filter = ("category",)
    search_fields = ("category", "key")
    readonly_fields = ("updated_by", "updated_at")
