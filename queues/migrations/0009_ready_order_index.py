"""A second index for the ready-service query, walking services in its order (CONCURRENTLY on PostgreSQL)."""

from django.db import migrations, models

from common.migration_ops import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("queues", "0008_service_backoff"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="emailservice",
            index=models.Index(
                models.F("used_quota"),
                models.OrderBy(models.F("last_sent_at"), nulls_first=True),
                models.F("id"),
                condition=models.Q(("is_enabled", True)),
                name="idx_email_services_ready_order",
            ),
            # SQLite cannot say NULLS FIRST in an index; it sorts NULLs first anyway.
            sqlite_sql=(
                "CREATE INDEX idx_email_services_ready_order ON email_services (used_quota, last_sent_at, id) "
                "WHERE is_enabled"
            ),
        ),
    ]
