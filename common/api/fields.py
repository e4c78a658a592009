"""Serializer fields whose schema says exactly what they take."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.api.schema_types import EMAIL, EMAIL_OR_BLANK


@extend_schema_field(EMAIL)
class EmailStringField(serializers.CharField):
    """An address as typed: the service function normalises (trims, lowercases the domain) and validates it."""


@extend_schema_field(EMAIL_OR_BLANK)
class EmailOrBlankField(serializers.CharField):
    """An address, or "" for none."""
