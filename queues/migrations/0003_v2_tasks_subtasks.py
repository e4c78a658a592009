"""V2 tasks and subtasks: what claiming, retrying and fair rotation need.

Subtasks get their owner (denormalised from the task, for per-user rotation),
attempt counting, a retry time, a stable Message-ID and a claim lease
(token, worker, time). Legacy rows are brought to the V2 rules here so that
0004 can make them constraints.
"""

from django.conf import settings
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


class LegacyDataError(Exception):
    pass


def fill_owner_and_normalise(apps, schema_editor):
    Task = apps.get_model("queues", "Task")
    SubTask = apps.get_model("queues", "SubTask")
    SubTask.objects.filter(owner__isnull=True).update(
        owner=Subquery(Task.objects.filter(pk=OuterRef("task_id")).values("owner_id")[:1])
    )
    # V1 could leave a claimed subtask without a service (a crash between the
    # two writes). Nothing was sent for it: it goes back to the queue.
    SubTask.objects.filter(status__in=["allocated", "processing"], service__isnull=True).update(
        status="pending", sender_email=None, error_message="Reset by the V2 upgrade: claimed without a service"
    )
    orphans = SubTask.objects.filter(status="sent", service__isnull=True).count()
    if orphans:
        raise LegacyDataError(
            f"{orphans} subtasks are 'sent' but name no email service; V2 requires one. "
            "Set subtasks.service_id for them (or mark them failed) and run the migration again."
        )


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0001_v1_baseline"),
        ("queues", "0002_v2_email_services"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="from_name",
            field=models.CharField(blank=True, max_length=100),
        ),
        migrations.AddField(
            model_name="task",
            name="reply_to",
            field=models.EmailField(blank=True, max_length=254),
        ),
        migrations.AddField(
            model_name="task",
            name="tag",
            field=models.ForeignKey(
                blank=True,
                help_text="The tag whose contacts were expanded into recipients, if any.",
                null=True,
                on_delete=models.SET_NULL,
                related_name="tasks",
                to="contacts.tag",
            ),
        ),
        migrations.AddField(
            model_name="task",
            name="completed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="task",
            name="priority",
            field=models.SmallIntegerField(default=0, help_text="Higher goes first within the owner's work."),
        ),
        migrations.AlterField(
            model_name="task",
            name="scheduled_at",
            field=models.DateTimeField(blank=True, help_text="Not sent before this moment.", null=True),
        ),
        migrations.AddField(
            model_name="subtask",
            name="owner",
            field=models.ForeignKey(
                db_index=False,
                null=True,
                on_delete=models.CASCADE,
                related_name="subtasks",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="subtask",
            name="attempts",
            field=models.IntegerField(default=0),
        ),
        migrations.AddField(
            model_name="subtask",
            name="next_attempt_at",
            field=models.DateTimeField(blank=True, help_text="Not claimed before this moment.", null=True),
        ),
        migrations.AddField(
            model_name="subtask",
            name="message_id",
            field=models.CharField(blank=True, help_text="Stable across every attempt.", max_length=255),
        ),
        migrations.AddField(
            model_name="subtask",
            name="claim_token",
            field=models.UUIDField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="subtask",
            name="claimed_by",
            field=models.CharField(blank=True, help_text="Worker id of the current claim.", max_length=200),
        ),
        migrations.AddField(
            model_name="subtask",
            name="claimed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(fill_owner_and_normalise, migrations.RunPython.noop),
    ]
