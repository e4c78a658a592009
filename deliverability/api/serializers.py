"""Suppression list payloads. Types and sizes are checked here; the list's rules live in deliverability."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.api.fields import EmailStringField
from common.api.strict_input import StrictInputMixin
from contacts.services import email_errors
from deliverability.models import Suppression
from deliverability.suppression_csv import MAX_DETAIL
from deliverability.suppressions import email_normalise


class SuppressionSerializer(serializers.ModelSerializer):
    scope = serializers.SerializerMethodField(help_text="own: your list; platform: everyone's mail (staff).")

    class Meta:
        model = Suppression
        fields = ["id", "email", "reason", "source", "detail", "scope", "task", "subtask", "service", "created_at"]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=["own", "platform"]))
    def get_scope(self, entry: Suppression) -> str:
        return "platform" if entry.owner_id is None else "own"


class SuppressionCreateSerializer(StrictInputMixin, serializers.Serializer):
    # A plain string: normalised (trimmed, lowercased) before it is validated.
    email = EmailStringField(max_length=320)
    reason = serializers.ChoiceField(choices=Suppression.Reason.choices, default=Suppression.Reason.MANUAL)
    detail = serializers.CharField(
        max_length=MAX_DETAIL, required=False, allow_blank=True, default="", help_text="Why, for the record."
    )

    def validate_email(self, value: str) -> str:
        email = email_normalise(value)
        if problems := email_errors(email):
            raise serializers.ValidationError(problems)
        return email


class SuppressionImportUploadSerializer(StrictInputMixin, serializers.Serializer):
    file = serializers.FileField(help_text="CSV: one address per line, email[,reason]; an optional header row.")


class SuppressionImportErrorSerializer(serializers.Serializer):
    line = serializers.IntegerField(help_text="As a text editor numbers it: the first line is 1.")
    email = serializers.CharField()
    error = serializers.CharField()


class SuppressionImportResultSerializer(serializers.Serializer):
    added = serializers.IntegerField(help_text="Addresses added to the list.")
    already_present = serializers.IntegerField(help_text="Addresses already on it (or earlier in the file).")
    invalid = serializers.IntegerField(help_text="Lines refused.")
    errors = SuppressionImportErrorSerializer(many=True, help_text="The first 100 refused lines, with why.")
