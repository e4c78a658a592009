"""Contact and tag payloads. Types and sizes are checked here; the rules live in contacts.services."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from common.api.fields import EmailStringField
from common.api.strict_input import StrictInputMixin
from contacts.models import Contact, Tag
from contacts.services import contact_create, contact_update, tag_create, tag_rename


class ContactSerializer(StrictInputMixin, serializers.ModelSerializer):
    # Plain strings: contact_create normalises the address before validating it.
    email = EmailStringField(max_length=320)
    first_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    attributes = serializers.DictField(
        required=False, help_text='Extra merge fields for personalisation, e.g. {"company": "ACME"}.'
    )

    class Meta:
        model = Contact
        fields = ["id", "email", "first_name", "last_name", "attributes", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]

    def create(self, validated_data: dict[str, Any]) -> Contact:
        return contact_create(owner=self.context["request"].user, **validated_data)

    def update(self, instance: Contact, validated_data: dict[str, Any]) -> Contact:
        return contact_update(contact=instance, **validated_data)


class TagSerializer(StrictInputMixin, serializers.ModelSerializer):
    name = serializers.CharField(max_length=100)
    contact_count = serializers.IntegerField(read_only=True, help_text="How many contacts the tag holds.")

    class Meta:
        model = Tag
        fields = ["id", "name", "contact_count", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]

    def create(self, validated_data: dict[str, Any]) -> Tag:
        return tag_create(owner=self.context["request"].user, name=validated_data["name"])

    def update(self, instance: Tag, validated_data: dict[str, Any]) -> Tag:
        if "name" in validated_data:
            return tag_rename(tag=instance, name=validated_data["name"])
        return instance


class StrictUUIDField(serializers.UUIDField):
    """A UUID written as a string; DRF would also take a number as UUID(int=...)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class TagContactIdsSerializer(StrictInputMixin, serializers.Serializer):
    contact_ids = serializers.ListField(
        child=StrictUUIDField(), allow_empty=False, max_length=10_000, help_text="Ids of your contacts."
    )


class TagAddResultSerializer(serializers.Serializer):
    added = serializers.IntegerField(help_text="Contacts that were not members before.")
    contact_count = serializers.IntegerField()


class TagRemoveResultSerializer(serializers.Serializer):
    removed = serializers.IntegerField(help_text="Contacts that were members and no longer are.")
    contact_count = serializers.IntegerField()


class ContactImportUploadSerializer(StrictInputMixin, serializers.Serializer):
    file = serializers.FileField(help_text="CSV with a header row naming an 'email' column.")


class ContactImportRowErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField(help_text="As a spreadsheet numbers it: the header is row 1.")
    email = serializers.CharField()
    errors = serializers.ListField(child=serializers.CharField())


class ContactImportResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    errors = ContactImportRowErrorSerializer(many=True)
