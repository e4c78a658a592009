"""WorkerHeartbeat and TaskWaitMetric belong to queues now (they were monitoring's).

The tables stay where they are (worker_heartbeats, task_wait_metrics): only the
migration state moves, so nothing is copied or locked. monitoring 0005 removes
them from monitoring's state and moves their content types (permissions, admin
history) to queues.
"""

import uuid

import django.db.models.deletion
import django.db.models.functions.datetime
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0020_encrypted_credentials"),
        ("monitoring", "0004_heartbeat_progress"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="TaskWaitMetric",
                    fields=[
                        ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ("queue_entry_time", models.DateTimeField()),
                        ("first_send_time", models.DateTimeField(blank=True, null=True)),
                        ("wait_duration_seconds", models.IntegerField(blank=True, null=True)),
                        (
                            "status",
                            models.CharField(
                                choices=[("waiting", "Waiting"), ("processing", "Processing")],
                                db_default="waiting",
                                default="waiting",
                                max_length=20,
                            ),
                        ),
                        ("created_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                        (
                            "task",
                            models.ForeignKey(
                                db_constraint=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="wait_metrics",
                                to="queues.task",
                            ),
                        ),
                        (
                            "user",
                            models.ForeignKey(
                                db_constraint=False,
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "task_wait_metrics",
                        "ordering": ["-queue_entry_time"],
                    },
                ),
                migrations.CreateModel(
                    name="WorkerHeartbeat",
                    fields=[
                        ("worker_id", models.CharField(max_length=200, primary_key=True, serialize=False)),
                        ("hostname", models.CharField(max_length=255)),
                        ("pid", models.IntegerField()),
                        ("concurrency", models.PositiveIntegerField(default=1)),
                        ("started_at", models.DateTimeField()),
                        ("last_seen_at", models.DateTimeField()),
                        ("stopped_at", models.DateTimeField(blank=True, null=True)),
                        ("in_flight", models.PositiveIntegerField(default=0)),
                        ("sent", models.BigIntegerField(default=0)),
                        ("failed", models.BigIntegerField(default=0)),
                        (
                            "reported_at",
                            models.DateTimeField(
                                blank=True, help_text="Last heartbeat written, stalled or not.", null=True
                            ),
                        ),
                        (
                            "claim_progress_at",
                            models.DateTimeField(blank=True, help_text="The claim loop last went round.", null=True),
                        ),
                        (
                            "recorder_progress_at",
                            models.DateTimeField(
                                blank=True,
                                help_text="The recorder last wrote a batch, or had nothing to write.",
                                null=True,
                            ),
                        ),
                        (
                            "recorder_failing_since",
                            models.DateTimeField(
                                blank=True,
                                help_text="First failed write of the batch the recorder is still retrying.",
                                null=True,
                            ),
                        ),
                        (
                            "stalled_since",
                            models.DateTimeField(
                                blank=True,
                                help_text="Set while the recorder or claim loop makes no progress; liveness stops.",
                                null=True,
                            ),
                        ),
                        ("stalled_reason", models.CharField(blank=True, max_length=200)),
                    ],
                    options={
                        "db_table": "worker_heartbeats",
                        "ordering": ["-last_seen_at"],
                        "indexes": [models.Index(fields=["last_seen_at"], name="idx_worker_heartbeats_seen")],
                    },
                ),
            ],
        ),
    ]
