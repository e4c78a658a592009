"""Model fields whose database column holds only a Fernet token (keys: common.field_keys).

Reading a row gives the plaintext; writing one encrypts it with the first key
of EDM_FIELD_KEYS. Each encryption is randomised, so these fields cannot be
filtered on by value. ``Ciphertext`` marks a value that is already a token
(rotation writes those): it is stored as it is.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.validators import MaxLengthValidator
from django.db import models

from common.field_keys import FieldKeyError, decrypt_text, encrypt_text


class Ciphertext(str):
    """A Fernet token to store unchanged."""


class EncryptedTextField(models.TextField):
    """Text encrypted at rest. An empty string stays empty: there is nothing to hide in it."""

    description = "Text encrypted at rest with EDM_FIELD_KEYS"

    def __init__(self, *args: Any, plaintext_max_length: int | None = None, **kwargs: Any) -> None:
        self.plaintext_max_length = plaintext_max_length
        super().__init__(*args, **kwargs)
        if plaintext_max_length is not None:
            self.validators.append(MaxLengthValidator(plaintext_max_length))

    def deconstruct(self) -> tuple[str, str, list, dict]:
        name, path, args, kwargs = super().deconstruct()
        if self.plaintext_max_length is not None:
            kwargs["plaintext_max_length"] = self.plaintext_max_length
        return name, path, args, kwargs

    def get_prep_value(self, value: Any) -> Any:
        if isinstance(value, Ciphertext):
            return str(value)
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt_text(value)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return value
        return decrypt_text(value, what=f"{self.model._meta.db_table}.{self.column}")


class EncryptedJSONField(models.JSONField):
    """A JSON value encrypted at rest: the column holds the token as a JSON string.

    Kept a JSON column so that no database needs its column type changed
    (SQLite's JSON columns accept only valid JSON).
    """

    description = "JSON encrypted at rest with EDM_FIELD_KEYS"

    def get_prep_value(self, value: Any) -> Any:
        if isinstance(value, Ciphertext):
            return str(value)
        if value is None:
            return None
        return encrypt_text(json.dumps(value, cls=self.encoder))

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        token = super().from_db_value(value, expression, connection)
        if token is None:
            return None
        if not isinstance(token, str):
            raise FieldKeyError(f"{self.model._meta.db_table}.{self.column} holds a value that is not encrypted")
        return json.loads(decrypt_text(token, what=f"{self.model._meta.db_table}.{self.column}"), cls=self.decoder)
