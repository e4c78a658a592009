"""What the V2 scheduler keeps: fair-rotation state, the attempt log, service failure counts.

Pending subtasks carried over from V1 get a claim time (their creation time)
and their owners enter the rotation, so that upgraded work is sent.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models
from django.db.models import F
from django.utils import timezone

import common.ids


def fill_claim_state(apps, schema_editor):
    SubTask = apps.get_model("queues", "SubTask")
    UserQueue = apps.get_model("queues", "UserQueue")
    SubTask.objects.filter(next_attempt_at__isnull=True).update(next_attempt_at=F("created_at"))
    owners = SubTask.objects.filter(status="pending").values_list("owner_id", flat=True).distinct()
    now = timezone.now()
    UserQueue.objects.bulk_create(
        (UserQueue(user_id=owner, turn=0, ready_at=now) for owner in owners.iterator()),
        batch_size=1000,
        ignore_conflicts=True,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("contacts", "0003_remove_contact_tags"),
        ("queues", "0005_v2_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="SendAttempt",
            fields=[
                ("id", models.UUIDField(default=common.ids.uuid7, editable=False, primary_key=True, serialize=False)),
                ("worker_id", models.CharField(max_length=200)),
                ("started_at", models.DateTimeField()),
                ("finished_at", models.DateTimeField()),
                (
                    "outcome",
                    models.CharField(
                        choices=[
                            ("sent", "Sent"),
                            ("transient", "Transient failure"),
                            ("permanent", "Permanent failure"),
                        ],
                        max_length=10,
                    ),
                ),
                ("smtp_code", models.IntegerField(blank=True, null=True)),
                ("smtp_reply", models.TextField(blank=True)),
            ],
            options={
                "db_table": "send_attempts",
                "ordering": ["started_at"],
            },
        ),
        migrations.CreateModel(
            name="UserQueue",
            fields=[
                (
                    "user",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="queue",
                        serialize=False,
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                ("turn", models.BigIntegerField(default=0)),
                ("ready_at", models.DateTimeField(blank=True, null=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "db_table": "user_queues",
            },
        ),
        migrations.AddField(
            model_name="emailservice",
            name="consecutive_failures",
            field=models.IntegerField(
                default=0, help_text="Failed sends since the last success; the service backs off past a threshold."
            ),
        ),
        migrations.AlterField(
            model_name="subtask",
            name="id",
            field=models.UUIDField(default=common.ids.uuid7, editable=False, primary_key=True, serialize=False),
        ),
        migrations.RunPython(fill_claim_state, migrations.RunPython.noop),
        migrations.AddField(
            model_name="sendattempt",
            name="service",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="attempts",
                to="queues.emailservice",
            ),
        ),
        migrations.AddField(
            model_name="sendattempt",
            name="subtask",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="attempts_log", to="queues.subtask"
            ),
        ),
        migrations.AddIndex(
            model_name="userqueue",
            index=models.Index(
                condition=models.Q(("ready_at__isnull", False)),
                fields=["turn", "user"],
                name="idx_user_queues_rotation",
            ),
        ),
        migrations.AddIndex(
            model_name="sendattempt",
            index=models.Index(fields=["started_at"], name="idx_send_attempts_started"),
        ),
    ]
