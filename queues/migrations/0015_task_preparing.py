"""Tasks prepared in the background: the preparing status, its progress, and the staged recipients.

Tasks created before count their existing subtasks as their recipients, all prepared.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0003_remove_contact_tags"),
        ("queues", "0014_service_max_connections"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="TaskRecipient",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("position", models.PositiveIntegerField()),
                ("email", models.EmailField(max_length=254)),
                ("first_name", models.CharField(blank=True, max_length=100)),
                ("last_name", models.CharField(blank=True, max_length=100)),
                ("attributes", models.JSONField(blank=True, null=True)),
            ],
            options={
                "db_table": "task_recipients",
                "ordering": ["task", "position"],
            },
        ),
        migrations.CreateModel(
            name="TaskRecipientList",
            fields=[
                (
                    "task",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="queues.task",
                    ),
                ),
                ("recipients", models.JSONField()),
            ],
            options={
                "db_table": "task_recipient_lists",
            },
        ),
        migrations.AddField(
            model_name="task",
            name="recipients_prepared",
            field=models.PositiveIntegerField(
                default=0, help_text="Recipients expanded into subtasks so far; equals the total once prepared."
            ),
        ),
        migrations.AddField(
            model_name="task",
            name="recipients_staged",
            field=models.BooleanField(default=False, editable=False),
        ),
        migrations.AddField(
            model_name="task",
            name="recipients_total",
            field=models.PositiveIntegerField(
                default=0, help_text="Recipients to prepare (for a tag, its members when the task was created)."
            ),
        ),
        migrations.AlterField(
            model_name="task",
            name="status",
            field=models.CharField(
                choices=[
                    ("preparing", "Preparing"),
                    ("pending", "Pending"),
                    ("sending", "Sending"),
                    ("paused", "Paused"),
                    ("completed", "Completed"),
                    ("failed", "Failed"),
                    ("cancelled", "Cancelled"),
                ],
                default="pending",
                max_length=20,
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("status", "preparing")), fields=["created_at"], name="idx_tasks_preparing"
            ),
        ),
        migrations.AddField(
            model_name="taskrecipient",
            name="contact",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="contacts.contact",
            ),
        ),
        migrations.AddField(
            model_name="taskrecipient",
            name="task",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="staged_recipients",
                to="queues.task",
            ),
        ),
        migrations.AddConstraint(
            model_name="taskrecipient",
            constraint=models.UniqueConstraint(fields=("task", "position"), name="uniq_task_recipients_position"),
        ),
        migrations.RunSQL(
            "UPDATE tasks SET recipients_total = (SELECT count(*) FROM subtasks WHERE subtasks.task_id = tasks.id), "
            "recipients_prepared = (SELECT count(*) FROM subtasks WHERE subtasks.task_id = tasks.id), "
            "recipients_staged = true",
            migrations.RunSQL.noop,
        ),
    ]
