"""The V1 schema of contacts and tags, as the old system had it.

Membership was written on both sides: contacts.tags (a JSON list of tag ids,
indexed by idx_contacts_tags) and tags.contacts (a JSON list of contact ids).
Migration 0003 merges the two into tags.contacts and drops contacts.tags.
"""

import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from common.migration_ops import RunSQLPerVendor


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Contact",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("email", models.EmailField(max_length=254)),
                ("first_name", models.CharField(blank=True, max_length=100)),
                ("last_name", models.CharField(blank=True, max_length=100)),
                ("attributes", models.JSONField(blank=True, default=dict)),
                ("tags", models.JSONField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "owner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="contacts",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "db_table": "contacts",
                "ordering": ["email"],
                "constraints": [models.UniqueConstraint(fields=("owner", "email"), name="uniq_contacts_owner_email")],
            },
        ),
        migrations.CreateModel(
            name="Tag",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=100)),
                ("contacts", models.JSONField(blank=True, default=list)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "owner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="tags", to=settings.AUTH_USER_MODEL
                    ),
                ),
            ],
            options={
                "db_table": "tags",
                "ordering": ["name"],
                "constraints": [models.UniqueConstraint(fields=("owner", "name"), name="uniq_tags_owner_name")],
            },
        ),
        RunSQLPerVendor(
            forwards={
                "postgresql": ["CREATE INDEX idx_contacts_tags ON contacts USING gin (tags)"],
                "sqlite": ["CREATE INDEX idx_contacts_tags ON contacts (tags)"],
            },
            backwards={
                "postgresql": ["DROP INDEX IF EXISTS idx_contacts_tags"],
                "sqlite": ["DROP INDEX IF EXISTS idx_contacts_tags"],
            },
            description="Create the legacy index idx_contacts_tags",
        ),
    ]
