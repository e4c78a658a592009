from rest_framework import serializers

from common.api.strict_input import StrictInputMixin
from config.models import ConfigChange


class SettingSerializer(serializers.Serializer):
    """A declared setting and its current value (read-only view of ConfigManagerService.describe)."""

    category = serializers.CharField()
    key = serializers.CharField()
    name = serializers.CharField()
    type = serializers.ChoiceField(choices=["int", "float", "bool", "str"])
    value = serializers.JSONField()
    default = serializers.JSONField()
    is_default = serializers.BooleanField()
    minimum = serializers.FloatField(allow_null=True)
    maximum = serializers.FloatField(allow_null=True)
    choices = serializers.ListField(child=serializers.CharField(), allow_null=True)
    description = serializers.CharField()
    updated_at = serializers.DateTimeField(allow_null=True)
    updated_by = serializers.CharField(allow_null=True)


class SettingUpdateSerializer(StrictInputMixin, serializers.Serializer):
    value = serializers.JSONField(help_text="The new value, of the setting's type (checked against its bounds).")


class ConfigChangeSerializer(serializers.ModelSerializer):
    changed_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ConfigChange
        fields = ("id", "category", "key", "old_value", "new_value", "changed_by", "changed_at", "source")
