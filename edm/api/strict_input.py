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

The OpenAPI schema is generated from the same rules (edm.api.schema): request
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
    # Set by the schema generator, which has no object to pass (see edm.api.schema.AutoSchema).
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
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}  # type: ignore[attr-defined]
            refused = {
                str(key): [_refusal(key, self.fields)]  # type: ignore[attr-defined]
                for key in data
                if key not in writable
            }
            if refused:
                raise serializers.ValidationError(refused)
        return super().to_internal_value(data)  # type: ignore[misc]


def _refusal(key: Any, fields: Mapping[str, serializers.Field]) -> str:
    if key in fields:
        return "read-only field: it cannot be set by this request"
    return "unknown field"
