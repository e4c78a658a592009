"""Indexes the V2 claim uses on the big tables, CONCURRENTLY on PostgreSQL (hence not atomic)."""

import django.utils.timezone
from django.db import migrations, models
from django.db.models import Q

from common.migration_ops import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("queues", "0006_scheduler_state"),
    ]

    operations = [
        migrations.AlterField(
            model_name="subtask",
            name="next_attempt_at",
            field=models.DateTimeField(default=django.utils.timezone.now, help_text="Not claimed before this moment."),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="subtask",
            index=models.Index(
                condition=Q(status="pending"), fields=["task", "next_attempt_at", "id"], name="idx_subtasks_claim"
            ),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="task",
            index=models.Index(
                condition=Q(status__in=["pending", "sending"]),
                fields=["owner", "-priority", "created_at", "id"],
                name="idx_tasks_owner_runnable",
            ),
        ),
    ]
