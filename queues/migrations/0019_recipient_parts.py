"""Recipients waiting for their subtasks are kept in parts (task_recipient_parts), not one row each; subtasks
lose the indexes and the constraint their inserts paid for and no query needed.

- task_recipient_parts replaces task_recipient_lists (a list as the request
  gave it) and task_recipients (one row per recipient, staged by the first
  chunk): a task being prepared keeps its remaining recipients there, in
  order. Either older form is moved over as one part.
- subtasks.task_id, owner_id, contact_id: no foreign-key constraint (see
  SubTask: the preparation guarantees them, and checking them row by row was
  half of its time); task_id has no index of its own either
  (idx_subtasks_task_status starts with it).
- subtasks.service_id: indexed only where set (idx_subtasks_service).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def parts_from_staging(apps, schema_editor) -> None:
    """Each unstaged list, and each task's staged recipients (the positions still to do), become one part."""
    Task = apps.get_model("queues", "Task")
    TaskRecipientList = apps.get_model("queues", "TaskRecipientList")
    TaskRecipient = apps.get_model("queues", "TaskRecipient")
    TaskRecipientPart = apps.get_model("queues", "TaskRecipientPart")
    for listed in TaskRecipientList.objects.all():
        TaskRecipientPart.objects.create(
            task_id=listed.task_id, start=0, size=len(listed.recipients), recipients=listed.recipients
        )
        Task.objects.filter(pk=listed.task_id).update(recipients_staged=True)
    task_ids = TaskRecipient.objects.order_by().values_list("task_id", flat=True).distinct()
    for task_id in task_ids:
        staged = list(TaskRecipient.objects.filter(task_id=task_id).order_by("position"))
        entries = [
            [r.email, r.first_name, r.last_name, r.attributes] if r.contact_id is None else [r.email, str(r.contact_id)]
            for r in staged
        ]
        TaskRecipientPart.objects.create(
            task_id=task_id, start=staged[0].position - 1, size=len(entries), recipients=entries
        )


def staging_from_parts(apps, schema_editor) -> None:
    """Back: every part's recipients staged one row each, at their positions."""
    TaskRecipient = apps.get_model("queues", "TaskRecipient")
    TaskRecipientPart = apps.get_model("queues", "TaskRecipientPart")
    for part in TaskRecipientPart.objects.order_by("task_id", "start"):
        TaskRecipient.objects.bulk_create(
            TaskRecipient(task_id=part.task_id, position=part.start + i, email=entry[0], contact_id=entry[1])
            if len(entry) == 2
            else TaskRecipient(
                task_id=part.task_id,
                position=part.start + i,
                email=entry[0],
                first_name=entry[1],
                last_name=entry[2],
                attributes=entry[3],
            )
            for i, entry in enumerate(part.recipients, 1)
        )


def parts_uncompressed(apps, schema_editor) -> None:
    """Every chunk reads its part: kept uncompressed (PostgreSQL would pglz-compress a large value)."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE task_recipient_parts ALTER COLUMN recipients SET STORAGE EXTERNAL")


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0003_remove_contact_tags"),
        ("queues", "0018_bounce_class_pause_reason"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="TaskRecipientPart",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("start", models.PositiveIntegerField()),
                ("size", models.PositiveIntegerField()),
                ("recipients", models.JSONField()),
                (
                    "task",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="queues.task",
                    ),
                ),
            ],
            options={
                "db_table": "task_recipient_parts",
                "ordering": ["task", "start"],
                "constraints": [
                    models.UniqueConstraint(fields=("task", "start"), name="uniq_task_recipient_parts_start")
                ],
            },
        ),
        migrations.RunPython(parts_uncompressed, migrations.RunPython.noop),
        migrations.RunPython(parts_from_staging, staging_from_parts),
        migrations.DeleteModel(name="TaskRecipient"),
        migrations.DeleteModel(name="TaskRecipientList"),
        migrations.AlterField(
            model_name="subtask",
            name="owner",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="subtasks",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="subtask",
            name="task",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="subtasks",
                to="queues.task",
            ),
        ),
        migrations.AlterField(
            model_name="subtask",
            name="contact",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="subtasks",
                to="contacts.contact",
            ),
        ),
        migrations.AlterField(
            model_name="subtask",
            name="service",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="subtasks",
                to="queues.emailservice",
            ),
        ),
        migrations.AddIndex(
            model_name="subtask",
            index=models.Index(
                condition=models.Q(("service__isnull", False)), fields=["service"], name="idx_subtasks_service"
            ),
        ),
    ]
