"""service_connection_grants: each scheduler process's share of a service's max_connections."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0015_task_preparing"),
    ]

    operations = [
        migrations.CreateModel(
            name="ServiceConnectionGrant",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("worker_id", models.CharField(max_length=200)),
                ("connections", models.PositiveIntegerField(help_text="Most connections the process may have open.")),
                (
                    "wanted",
                    models.PositiveIntegerField(help_text="Connections the process could use at its last renewal."),
                ),
                ("renewed_at", models.DateTimeField(help_text="Database time of the last renewal.")),
                ("expires_at", models.DateTimeField(help_text="Database time after which the grant no longer counts.")),
                (
                    "service",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="connection_grants",
                        to="queues.emailservice",
                    ),
                ),
            ],
            options={
                "db_table": "service_connection_grants",
                "ordering": ["service", "worker_id"],
                "indexes": [models.Index(fields=["worker_id"], name="idx_connection_grants_worker")],
                "constraints": [
                    models.UniqueConstraint(fields=("service", "worker_id"), name="service_connection_grants_unique")
                ],
            },
        ),
    ]
