"""Make 0003's filled-in data rules hard constraints.

A separate migration because PostgreSQL refuses ALTER TABLE on a table with
deferred foreign-key checks still pending from 0003's UPDATE.
"""

from django.conf import settings
from django.db import migrations, models
from django.db.models import Q


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0003_v2_tasks_subtasks"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="subtask",
            name="owner",
            field=models.ForeignKey(
                db_index=False,
                on_delete=models.CASCADE,
                related_name="subtasks",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddConstraint(
            model_name="subtask",
            constraint=models.CheckConstraint(
                condition=~Q(status__in=["allocated", "processing", "sent"]) | Q(service__isnull=False),
                name="subtasks_service_when_allocated",
            ),
        ),
    ]
