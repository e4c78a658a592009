"""The plan's partial indexes (Phase 4.1 Day 1-2 and 4.3 Day 22-24).

Built with CREATE INDEX CONCURRENTLY on PostgreSQL so that a live database
keeps accepting writes; hence not atomic. Plain CREATE INDEX on SQLite.
"""

from django.db import migrations, models
from django.db.models import Q

from common.migration_ops import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("queues", "0004_v2_subtask_constraints"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="emailservice",
            index=models.Index(
                condition=Q(is_enabled=True),
                fields=["next_available_at", "is_enabled"],
                name="idx_email_services_next_available_enabled",
            ),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="subtask",
            index=models.Index(
                condition=Q(status="pending"),
                fields=["status", "priority", "created_at"],
                name="idx_subtasks_pending_priority",
            ),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="task",
            index=models.Index(
                condition=Q(status="sending"),
                fields=["status", "updated_at"],
                name="idx_tasks_sending_updated",
            ),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="subtask",
            index=models.Index(fields=["task", "status"], name="idx_subtasks_task_status"),
        ),
    ]
