import uuid

from django.conf import settings
from django.db import models


class Contact(models.Model):
    """A recipient in a user's address book.

    Tag membership lives only in ``Tag.contacts``; the legacy ``contacts.tags``
    column was merged into it and dropped (migration 0003).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: uniq_contacts_owner_email (owner_id first) serves "owner_id = %s".
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False, related_name="contacts"
    )
    email = models.EmailField(max_length=254)
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    # Extra merge fields for personalisation, e.g. {"company": "ACME"}.
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "contacts"
        ordering = ["email"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "email"], name="uniq_contacts_owner_email"),
        ]

    def __str__(self) -> str:
        return self.email

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class Tag(models.Model):
    """A named group of a user's contacts.

    ``contacts`` is a JSON list of contact ids (strings) and the single source
    of truth for membership. Write it only through ``ContactTagManager``, whose
    updates are atomic. On PostgreSQL a GIN index (``idx_tags_contacts_gin``,
    migration 0002) serves "which tags hold this contact" (``contacts @> '["id"]'``);
    it is created per database vendor, so it is not declared here.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=100)
    contacts = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "tags"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="uniq_tags_owner_name"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def contact_count(self) -> int:
        return len(self.contacts or [])
