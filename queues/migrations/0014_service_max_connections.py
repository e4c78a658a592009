"""EmailService.max_connections: the cap on SMTP connections open to a service from all schedulers."""

import django.core.validators
from django.db import migrations, models

FIELD = models.PositiveSmallIntegerField(
    db_default=20,
    default=20,
    help_text="Most SMTP connections open to this service at once, from all schedulers together.",
    validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(1000)],
)


def _field(model) -> models.Field:
    field = FIELD.clone()
    field.set_attributes_from_name("max_connections")
    field.model = model
    return field


def add_column(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        # In place: Django's table rebuild would recreate an index SQLite cannot declare (NULLS FIRST).
        schema_editor.execute(
            "ALTER TABLE email_services ADD COLUMN max_connections smallint unsigned NOT NULL DEFAULT 20 "
            "CHECK (max_connections >= 0)"
        )
        return
    model = apps.get_model("queues", "EmailService")
    schema_editor.add_field(model, _field(model))


def drop_column(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("ALTER TABLE email_services DROP COLUMN max_connections")
        return
    model = apps.get_model("queues", "EmailService")
    schema_editor.remove_field(model, _field(model))


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0013_task_failure_reason"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddField(model_name="emailservice", name="max_connections", field=FIELD)],
            database_operations=[migrations.RunPython(add_column, drop_column)],
        ),
    ]
