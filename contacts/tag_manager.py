"""ContactTagManager: the only code that reads or writes tag membership.

Membership is ``Tag.contacts``, a JSON list of contact ids. The plan's
version read the list, appended in memory and wrote it back, so two
concurrent adds lost one of them. Here every change happens inside a
transaction that first locks the tag row (``SELECT … FOR UPDATE`` on
PostgreSQL; SQLite's IMMEDIATE transactions serialise writers), so
concurrent adds and removes all land.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db import connection, transaction
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL

from contacts.exceptions import ContactNotFound, TagNotFound
from contacts.models import Contact, Tag

# Ids per IN (...) query: far below SQLite's bound-variable limit.
_CHUNK = 5000


def _as_uuid(value: uuid.UUID | str, error: type[TagNotFound] | type[ContactNotFound]) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise error(value) from None


class ContactTagManager:
    """Add, remove and query contacts of tags; atomic and owner-scoped."""

    def add_contact_to_tag(self, tag_id: uuid.UUID | str, contact_id: uuid.UUID | str) -> bool:
        """Add a contact to a tag. Returns False if it was already a member."""
        return self.add_contacts_to_tag(tag_id, [contact_id]) == 1

    def add_contacts_to_tag(self, tag_id: uuid.UUID | str, contact_ids: Iterable[uuid.UUID | str]) -> int:
        """Add several contacts of the tag's owner at once; returns how many were new.

        All or nothing: if one contact is unknown, none is added.
        """
        wanted = list(dict.fromkeys(_as_uuid(cid, ContactNotFound) for cid in contact_ids))
        with transaction.atomic():
            tag = self._lock_tag(tag_id)
            self._require_contacts(tag, wanted)
            members = list(tag.contacts or [])
            present = set(members)
            new = [str(cid) for cid in wanted if str(cid) not in present]
            if new:
                tag.contacts = members + new
                tag.save(update_fields=["contacts", "updated_at"])
        return len(new)

    def remove_contact_from_tag(self, tag_id: uuid.UUID | str, contact_id: uuid.UUID | str) -> bool:
        """Remove a contact from a tag. Returns False if it was not a member."""
        cid = str(_as_uuid(contact_id, ContactNotFound))
        with transaction.atomic():
            tag = self._lock_tag(tag_id)
            self._require_contacts(tag, [uuid.UUID(cid)])
            members = list(tag.contacts or [])
            if cid not in members:
                return False
            tag.contacts = [member for member in members if member != cid]
            tag.save(update_fields=["contacts", "updated_at"])
        return True

    def contacts_of_tag(self, tag_id: uuid.UUID | str, *, guard: bool = True) -> QuerySet[Contact]:
        """The tag's contacts, as a queryset (the id list is expanded in SQL).

        ``guard=False`` (PostgreSQL) leaves out the pattern check that skips a
        malformed legacy entry: that regular expression costs some 5 µs an
        entry, most of the time of reading a large tag. A malformed entry then
        fails the query (DataError) instead.
        """
        tid = _as_uuid(tag_id, TagNotFound)
        tag = Tag.objects.filter(pk=tid).values("owner_id").first()
        if tag is None:
            raise TagNotFound(tag_id)
        if connection.vendor == "postgresql" and guard:
            # The pattern guard keeps a malformed legacy entry from failing the cast.
            members = RawSQL(
                "SELECT m::uuid FROM tags, jsonb_array_elements_text(tags.contacts) AS m "
                "WHERE tags.id = %s AND m ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'",
                [tid],
            )
        elif connection.vendor == "postgresql":
            members = RawSQL(
                "SELECT m::uuid FROM tags, jsonb_array_elements_text(tags.contacts) AS m WHERE tags.id = %s", [tid]
            )
        else:
            # SQLite stores UUID columns as 32 hex digits, the JSON list with dashes.
            members = RawSQL(
                "SELECT replace(j.value, '-', '') FROM tags, json_each(tags.contacts) AS j WHERE tags.id = %s",
                [tid.hex],
            )
        return Contact.objects.filter(owner_id=tag["owner_id"], id__in=members)

    def tags_of_contact(self, contact_id: uuid.UUID | str) -> QuerySet[Tag]:
        """The tags that hold a contact (GIN-indexed containment on PostgreSQL)."""
        cid = _as_uuid(contact_id, ContactNotFound)
        contact = Contact.objects.filter(pk=cid).values("owner_id").first()
        if contact is None:
            raise ContactNotFound(contact_id)
        tags = Tag.objects.filter(owner_id=contact["owner_id"])
        if connection.vendor == "postgresql":
            # contacts @> '["<id>"]', served by idx_tags_contacts_gin (migration 0002).
            return tags.filter(contacts__contains=[str(cid)])
        holders = RawSQL(
            "SELECT tags.id FROM tags, json_each(tags.contacts) AS j WHERE j.value = %s",
            [str(cid)],
        )
        return tags.filter(id__in=holders)

    @staticmethod
    def _lock_tag(tag_id: uuid.UUID | str) -> Tag:
        tid = _as_uuid(tag_id, TagNotFound)
        try:
            return Tag.objects.select_for_update().get(pk=tid)
        except Tag.DoesNotExist:
            raise TagNotFound(tag_id) from None

    @staticmethod
    def _require_contacts(tag: Tag, contact_ids: list[uuid.UUID]) -> None:
        owned = Contact.objects.filter(owner_id=tag.owner_id)
        for start in range(0, len(contact_ids), _CHUNK):
            chunk = contact_ids[start : start + _CHUNK]
            known = set(owned.filter(pk__in=chunk).values_list("pk", flat=True))
            for cid in chunk:
                if cid not in known:
                    raise ContactNotFound(cid, owner_id=tag.owner_id)
