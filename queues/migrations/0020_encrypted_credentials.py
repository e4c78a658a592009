"""Service credentials encrypted at rest, and backend paths limited to EDM_ALLOWED_BACKENDS.

``password`` and ``backend_options`` of every existing service are encrypted
with the first key of EDM_FIELD_KEYS (the reverse decrypts them). The password
column becomes ``text`` on PostgreSQL (a token is longer than 255 characters);
SQLite keeps its columns as they are (it does not enforce a varchar length, and
``backend_options`` stays a JSON column holding the token as a JSON string), so
no SQLite table is rebuilt (a rebuild would recreate an index SQLite cannot
declare, NULLS FIRST).
"""

import base64
import binascii
import json

from django.db import migrations, models

import common.encrypted_fields
import queues.backend_allowlist
from common.field_keys import decrypt_text, encrypt_text
from common.migration_ops import RunSQLPerVendor

# version byte 0x80 + timestamp + IV + at least one AES block + HMAC
_TOKEN_MIN_BYTES = 1 + 8 + 16 + 16 + 32


def _looks_like_token(value: str) -> bool:
    try:
        raw = base64.urlsafe_b64decode(value.encode())
    except (binascii.Error, ValueError):
        return False
    return len(raw) >= _TOKEN_MIN_BYTES and raw[0] == 0x80


def _encrypted(value: str, what: str) -> str:
    """``value`` as a token; a value that already is one must decrypt (never encrypted twice)."""
    if _looks_like_token(value):
        decrypt_text(value, what=what)  # raises FieldKeyError naming EDM_FIELD_KEYS when no key matches
        return value
    return encrypt_text(value)


def encrypt_credentials(apps, schema_editor):
    Service = apps.get_model("queues", "EmailService")
    rows = Service.objects.using(schema_editor.connection.alias)
    for pk, password, options in rows.values_list("pk", "password", "backend_options"):
        changes = {}
        if password:
            changes["password"] = _encrypted(password, "email_services.password")
        if options is not None:
            plain = options if isinstance(options, str) else json.dumps(options)
            changes["backend_options"] = _encrypted(plain, "email_services.backend_options")
        before = {"password": password, "backend_options": options}
        changes = {field: value for field, value in changes.items() if value != before[field]}  # already tokens
        if changes:
            rows.filter(pk=pk).update(**changes)


def decrypt_credentials(apps, schema_editor):
    Service = apps.get_model("queues", "EmailService")
    rows = Service.objects.using(schema_editor.connection.alias)
    for pk, password, options in rows.values_list("pk", "password", "backend_options"):
        changes = {}
        if password and _looks_like_token(password):
            changes["password"] = decrypt_text(password, what="email_services.password")
        if isinstance(options, str):
            changes["backend_options"] = json.loads(decrypt_text(options, what="email_services.backend_options"))
        if changes:
            rows.filter(pk=pk).update(**changes)


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0019_recipient_parts"),
    ]

    operations = [
        RunSQLPerVendor(
            forwards={"postgresql": ["ALTER TABLE email_services ALTER COLUMN password TYPE text"]},
            backwards={"postgresql": ["ALTER TABLE email_services ALTER COLUMN password TYPE varchar(255)"]},
            description="email_services.password becomes text on PostgreSQL (tokens exceed 255 characters)",
        ),
        migrations.RunPython(encrypt_credentials, decrypt_credentials, elidable=False),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="emailservice",
                    name="password",
                    field=common.encrypted_fields.EncryptedTextField(blank=True, plaintext_max_length=255),
                ),
                migrations.AlterField(
                    model_name="emailservice",
                    name="backend_options",
                    field=common.encrypted_fields.EncryptedJSONField(blank=True, default=dict),
                ),
                migrations.AlterField(
                    model_name="emailservice",
                    name="backend_path",
                    field=models.CharField(
                        blank=True,
                        help_text="Dotted path of a Django e-mail backend, e.g. anymail.backends.mailgun.EmailBackend.",
                        max_length=255,
                        validators=[queues.backend_allowlist.validate_backend_path],
                    ),
                ),
            ],
        ),
    ]
