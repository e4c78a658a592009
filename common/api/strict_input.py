"""What a request body may hold: its writable fields only, and on PUT all of them.

Every serializer that reads a request body mixes in StrictInputMixin:

- a key that is not a writable field of the operation (a typo, a field that
  does not exist, a read-only one such as a task's ``status``) is a 400 that
  names it, instead of being dropped without a word;
- PUT replaces the object: every writable field must be given, a missing one
  is a 400 (a default never stands in for it). Write-only secrets are the
  exception: they cannot be read back to be sent again, so a PUT without one
  keeps the stored value;
- PATCH changes only the fields it holds;
- ``create_only_fields`` may be set on create and are read-only afterwards.

The OpenAPI schema is generated from the same rules (common.api.schema): request
bodies say ``additionalProperties: false``, and PUT bodies list every field as
required.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from rest_framework import serializers
from rest_framework.fields import empty

Mode = Literal["create", "replace", "patch"]


class StrictInputMixin:
    """Mix into a Serializer (before it): unknown and read-only keys are refused, PUT needs every field."""

    create_only_fields: tuple[str, ...] = ()
    # Set by the schema generator, which has no object to pass (see common.api.schema.AutoSchema).
    schema_mode: Mode | None = None

    def input_mode(self) -> Mode:
        if self.schema_mode is not None:
            return self.schema_mode
        if getattr(self, "partial", False):
            return "patch"
        return "create" if getattr(self, "instance", None) is None else "replace"

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()  # type: ignore[misc]
        mode = self.input_mode()
        if mode == "create":
            return fields
        for name in self.create_only_fields:
            fields[name].read_only = True
        if mode == "replace":
            for field in fields.values():
                if not field.read_only and not field.write_only:
                    field.required = True
                    field.default = empty
        return fields

    def to_internal_value(self, data: Any) -> Any:
        refused = self._refused(data) if isinstance(data, Mapping) else {}
        try:
            value = super().to_internal_value(data)  # type: ignore[misc]
        except serializers.ValidationError as exc:
            if not refused or not isinstance(exc.detail, dict):
                raise
            raise serializers.ValidationError({**exc.detail, **refused}) from None
        if refused:
            raise serializers.ValidationError(refused)
        return value

    def _refused(self, data: Mapping[str, Any]) -> dict[str, list[str]]:
        fields: Mapping[str, serializers.Field] = self.fields  # type: ignore[attr-defined]
        refused = {str(key): [_refusal(key, fields)] for key in data if key not in fields or fields[key].read_only}
        if hasattr(data, "getlist"):
            return refused  # a form: every value is a string
        for name, value in data.items():
            if name not in refused and (problem := json_type_problem(fields[name], value)):
                refused[name] = [problem]
        return refused


def _refusal(key: Any, fields: Mapping[str, serializers.Field]) -> str:
    if key in fields:
        return "read-only field: it cannot be set by this request"
    return "unknown field"


def json_type_problem(field: serializers.Field, value: Any) -> str:
    """Why a JSON value is not of the field's type, or "" when it is.

    DRF would turn 587 into "587" for a string field, and "587" or true into
    numbers for a number field; the schema says which JSON type each field
    takes, and a value of another type is refused as the schema says.
    """
    if value is None:
        return ""  # allow_null decides
    if isinstance(field, serializers.ChoiceField):
        return ""  # the choices decide
    invalid = str(field.error_messages.get("invalid", "has the wrong type"))
    if isinstance(field, serializers.CharField):
        return "" if isinstance(value, str) else invalid
    if isinstance(field, (serializers.DateTimeField, serializers.UUIDField)):
        return "" if isinstance(value, str) else "must be a string"
    if isinstance(field, serializers.BooleanField):
        return "" if isinstance(value, bool) else invalid
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(field, serializers.IntegerField):
        whole = is_number and (isinstance(value, int) or value.is_integer())
        return "" if whole else invalid
    if isinstance(field, (serializers.FloatField, serializers.DecimalField)):
        return "" if is_number else invalid
    return ""
