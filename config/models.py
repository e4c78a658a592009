import uuid

from django.conf import settings
from django.db import models


class ConfigItem(models.Model):
    """One stored configuration value, keyed by (category, key).

    Only values that differ from the declared default need a row; the typed
    declarations (type, default, bounds) live in code.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    category = models.CharField(max_length=50)
    key = models.CharField(max_length=100)
    value = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        db_table = "config_items"
        ordering = ["category", "key"]
        constraints = [
            models.UniqueConstraint(fields=["category", "key"], name="uniq_config_items_category_key"),
        ]

    def __str__(self) -> str:
        return f"{self.category}.{self.key}"


class ConfigChange(models.Model):
    """Who changed which setting, when, from what to what (the audit trail).

    ``old_value`` / ``new_value`` are null where the setting was at its
    declared default (before) or was reset to it (after).
    """

    class Source(models.TextChoices):
        ADMIN = "admin", "Admin"
        API = "api", "API"
        COMMAND = "command", "Command"
        CODE = "code", "Code"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    category = models.CharField(max_length=50)
    key = models.CharField(max_length=100)
    old_value = models.JSONField(null=True, blank=True)
    new_value = models.JSONField(null=True, blank=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.CODE)

    class Meta:
        db_table = "config_changes"
        ordering = ["-changed_at"]
        indexes = [models.Index(fields=["category", "key", "-changed_at"], name="idx_config_changes_setting")]

    def __str__(self) -> str:
        return f"{self.category}.{self.key}: {self.old_value!r} -> {self.new_value!r}"
