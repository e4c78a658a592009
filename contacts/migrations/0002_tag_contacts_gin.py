"""GIN index on tags.contacts for "which tags hold this contact".

ContactTagManager.tags_of_contact() asks ``contacts @> '["<id>"]'`` on
PostgreSQL, which jsonb_path_ops serves. SQLite has no GIN; there the query
walks json_each() instead. Built CONCURRENTLY, hence not atomic.

fastupdate is off: with it on, new entries wait in a pending list that
every search scans linearly (after a bulk load: over 500 pages per lookup)
and that inflates the planner's cost estimate until it prefers a sequential
scan. Membership writes rewrite a whole list anyway; searches stay ~0.1 ms.
"""

from django.db import migrations

from common.migration_ops import RunSQLPerVendor


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("contacts", "0001_v1_baseline"),
    ]

    operations = [
        RunSQLPerVendor(
            forwards={
                "postgresql": [
                    # A build interrupted earlier leaves an INVALID index behind.
                    "DROP INDEX CONCURRENTLY IF EXISTS idx_tags_contacts_gin",
                    "CREATE INDEX CONCURRENTLY idx_tags_contacts_gin ON tags "
                    "USING gin (contacts jsonb_path_ops) WITH (fastupdate = off)",
                ],
            },
            backwards={
                "postgresql": ["DROP INDEX CONCURRENTLY IF EXISTS idx_tags_contacts_gin"],
            },
            description="Create the GIN index idx_tags_contacts_gin on tags.contacts (PostgreSQL)",
        ),
    ]
