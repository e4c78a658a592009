"""Remove the legacy contacts.tags column (the plan's Phase 4.2 Day 18-19).

In order, and reversed in the opposite order:

1. Back up (id, tags) of every contact with tags into contact_tags_backup,
   as the plan's SQL does. Going back restores the column from it.
2. Merge contacts.tags into tags.contacts, so that a membership recorded on
   either side survives. Every membership the merge adds is written to
   tag_contacts_merge_backup; going back removes exactly those again (and
   leaves alone any change made to tags.contacts since).
3. Drop the index idx_contacts_tags, then the column.
"""

import sys
import uuid
from collections import defaultdict

from django.db import migrations

from common.migration_ops import RunSQLPerVendor

BATCH = 1000


def _canonical_uuid(value) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except (TypeError, ValueError, AttributeError):
        return None


def _legacy_tag_refs(value) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [ref for ref in (_canonical_uuid(item) for item in value) if ref is not None]


def merge_legacy_tags(apps, schema_editor):
    Contact = apps.get_model("contacts", "Contact")
    Tag = apps.get_model("contacts", "Tag")
    schema_editor.execute(
        "CREATE TABLE tag_contacts_merge_backup (tag_id varchar(36) NOT NULL, contact_id varchar(36) NOT NULL)"
    )

    wanted: dict[str, list[str]] = defaultdict(list)
    rows = Contact.objects.filter(tags__isnull=False).values_list("id", "tags").order_by("id")
    for contact_id, tags in rows.iterator(chunk_size=BATCH):
        for tag_ref in _legacy_tag_refs(tags):
            wanted[tag_ref].append(str(contact_id))

    tag_ids = list(wanted)
    found: set[str] = set()
    for start in range(0, len(tag_ids), BATCH):
        chunk = [uuid.UUID(tag_id) for tag_id in tag_ids[start : start + BATCH]]
        for tag in Tag.objects.filter(pk__in=chunk).order_by("pk"):
            key = str(tag.pk)
            found.add(key)
            members = list(tag.contacts or [])
            present = {_canonical_uuid(member) for member in members}
            added = []
            for contact_id in wanted[key]:
                if contact_id not in present:
                    present.add(contact_id)
                    added.append(contact_id)
            if not added:
                continue
            tag.contacts = members + added
            tag.save(update_fields=["contacts"])
            with schema_editor.connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO tag_contacts_merge_backup (tag_id, contact_id) VALUES (%s, %s)",
                    [(key, contact_id) for contact_id in added],
                )

    missing = len(set(tag_ids) - found)
    if missing:
        # Kept, not lost: contact_tags_backup holds every legacy value.
        sys.stderr.write(
            f"\n  contacts.0003: {missing} tag ids in contacts.tags name no tag; "
            "their references stay in contact_tags_backup.\n"
        )


def unmerge_legacy_tags(apps, schema_editor):
    Tag = apps.get_model("contacts", "Tag")
    added: dict[str, set[str]] = defaultdict(set)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT tag_id, contact_id FROM tag_contacts_merge_backup")
        for tag_id, contact_id in cursor.fetchall():
            added[tag_id].add(contact_id)
    tag_ids = [uuid.UUID(tag_id) for tag_id in added]
    for start in range(0, len(tag_ids), BATCH):
        for tag in Tag.objects.filter(pk__in=tag_ids[start : start + BATCH]):
            remove = added[str(tag.pk)]
            tag.contacts = [member for member in tag.contacts or [] if _canonical_uuid(member) not in remove]
            tag.save(update_fields=["contacts"])
    schema_editor.execute("DROP TABLE tag_contacts_merge_backup")


BACKUP_SQL = "CREATE TABLE contact_tags_backup AS SELECT id, tags FROM contacts WHERE tags IS NOT NULL"
RESTORE_SQL = [
    "UPDATE contacts SET tags = (SELECT b.tags FROM contact_tags_backup b WHERE b.id = contacts.id) "
    "WHERE id IN (SELECT id FROM contact_tags_backup)",
    "DROP TABLE contact_tags_backup",
]


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0002_tag_contacts_gin"),
    ]

    operations = [
        migrations.RunSQL(BACKUP_SQL, RESTORE_SQL),
        migrations.RunPython(merge_legacy_tags, unmerge_legacy_tags),
        RunSQLPerVendor(
            forwards={
                "postgresql": ["DROP INDEX IF EXISTS idx_contacts_tags"],
                "sqlite": ["DROP INDEX IF EXISTS idx_contacts_tags"],
            },
            backwards={
                "postgresql": ["CREATE INDEX idx_contacts_tags ON contacts USING gin (tags)"],
                "sqlite": ["CREATE INDEX idx_contacts_tags ON contacts (tags)"],
            },
            description="Drop the legacy index idx_contacts_tags",
        ),
        migrations.RemoveField(model_name="contact", name="tags"),
    ]
