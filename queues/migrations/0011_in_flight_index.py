"""Recovery's index over the claims under way (CONCURRENTLY on PostgreSQL, hence not atomic)."""

from django.db import migrations, models

from common.migration_ops import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("queues", "0010_recovery_state"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="subtask",
            index=models.Index(
                condition=models.Q(("status__in", ["allocated", "processing"])),
                fields=["claimed_by", "updated_at"],
                name="idx_subtasks_in_flight",
            ),
        ),
    ]
