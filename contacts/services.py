"""Contact and tag writes: the functions the API (and anyone else) call.

Errors are Django ``ValidationError``s keyed by field, so a caller can show
them next to the input; every function writes all or nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from contacts.models import Contact, Tag
from contacts.tag_manager import ContactTagManager

EMAIL_MAX = 254
NAME_MAX = 100
TAG_NAME_MAX = 100
MAX_JSON_DEPTH = 20


def normalise_email(address: str) -> str:
    """Trim, lower-case the domain; the same rule task_create uses, so both find one contact."""
    local, at, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}" if at else address.strip()


def json_problem(value: Any) -> str | None:
    """Why a JSON-like value cannot be stored, or None.

    PostgreSQL refuses NUL characters in text and jsonb, and a deeply nested
    document would exhaust Python's recursion limit when it is encoded again.
    Walked without recursion for the same reason.
    """
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"must not be nested more than {MAX_JSON_DEPTH} levels deep"
        if isinstance(item, str) and "\x00" in item:
            return "must not contain NUL characters"
        if isinstance(item, dict):
            stack.extend((part, depth + 1) for pair in item.items() for part in pair)
        elif isinstance(item, list):
            stack.extend((part, depth + 1) for part in item)
    return None


def email_errors(address: str) -> list[str]:
    """Why an (already normalised) address cannot be stored; empty if it can."""
    if len(address) > EMAIL_MAX:
        return [f"at most {EMAIL_MAX} characters"]
    try:
        validate_email(address)
    except ValidationError:
        return [f"{address!r} is not a valid e-mail address"]
    return []


def _validate_contact(*, email: str, first_name: str, last_name: str, attributes: Any) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if problems := email_errors(email):
        errors["email"] = problems
    for field, value in (("first_name", first_name), ("last_name", last_name)):
        if len(value) > NAME_MAX:
            errors[field] = [f"at most {NAME_MAX} characters"]
    if not isinstance(attributes, dict):
        errors["attributes"] = ["must be an object"]
    elif problem := json_problem(attributes):
        errors["attributes"] = [problem]
    return errors


def _save_unique(contact: Contact, **save_kwargs: Any) -> Contact:
    """Save, turning the (owner, email) unique constraint into a field error."""
    duplicate = Contact.objects.filter(owner_id=contact.owner_id, email=contact.email).exclude(pk=contact.pk)
    if duplicate.exists():
        raise ValidationError({"email": ["you already have a contact with this address"]})
    try:
        with transaction.atomic():
            contact.save(**save_kwargs)
    except IntegrityError:
        # A concurrent request stored the same address between the check and the save.
        raise ValidationError({"email": ["you already have a contact with this address"]}) from None
    return contact


def contact_create(
    *, owner, email: str, first_name: str = "", last_name: str = "", attributes: dict | None = None
) -> Contact:
    """Add a contact to the owner's address book; the address must be new to it."""
    email = normalise_email(email)
    attributes = {} if attributes is None else attributes
    errors = _validate_contact(email=email, first_name=first_name, last_name=last_name, attributes=attributes)
    if errors:
        raise ValidationError(errors)
    contact = Contact(owner=owner, email=email, first_name=first_name, last_name=last_name, attributes=attributes)
    return _save_unique(contact, force_insert=True)


def contact_update(*, contact: Contact, **changes: Any) -> Contact:
    """Change a contact's email, names or attributes (only the keys given)."""
    allowed = {"email", "first_name", "last_name", "attributes"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationError({field: ["cannot be changed"] for field in sorted(unknown)})
    if "email" in changes:
        changes["email"] = normalise_email(changes["email"])
    merged = {field: changes.get(field, getattr(contact, field)) for field in allowed}
    errors = _validate_contact(**merged)
    if errors:
        raise ValidationError(errors)
    for field, value in changes.items():
        setattr(contact, field, value)
    return _save_unique(contact, update_fields=[*changes, "updated_at"])


def contact_delete(*, contact: Contact) -> None:
    """Delete a contact and take it out of every tag, so no tag keeps a dangling id."""
    contacts_delete(contacts=Contact.objects.filter(pk=contact.pk))


def contacts_delete(*, contacts: QuerySet[Contact]) -> int:
    """Delete contacts, each taken out of every tag first; returns how many were deleted.

    The rows are locked before anything else. A task's preparation holds the
    contacts it links subtasks to (FOR KEY SHARE) until it commits, and
    subtasks.contact_id has no constraint: locked first, the delete waits for
    such a preparation and then unlinks its subtasks too (on_delete SET_NULL);
    a preparation that comes second no longer finds the contact.
    """
    manager = ContactTagManager()
    with transaction.atomic():
        locked = list(contacts.select_for_update().order_by("pk").values_list("pk", flat=True))
        for contact_id in locked:
            for tag_id in manager.tags_of_contact(contact_id).values_list("pk", flat=True):
                manager.remove_contact_from_tag(tag_id, contact_id)
        Contact.objects.filter(pk__in=locked).delete()
    return len(locked)


def _check_tag_name(*, owner, name: str, exclude: uuid.UUID | None = None) -> str:
    name = name.strip()
    if not name:
        raise ValidationError({"name": ["must not be empty"]})
    if len(name) > TAG_NAME_MAX:
        raise ValidationError({"name": [f"at most {TAG_NAME_MAX} characters"]})
    if Tag.objects.filter(owner=owner, name=name).exclude(pk=exclude).exists():
        raise ValidationError({"name": ["you already have a tag with this name"]})
    return name


def _save_tag(tag: Tag, **save_kwargs: Any) -> Tag:
    try:
        with transaction.atomic():
            tag.save(**save_kwargs)
    except IntegrityError:
        raise ValidationError({"name": ["you already have a tag with this name"]}) from None
    return tag


def tag_create(*, owner, name: str) -> Tag:
    """A new, empty tag; names are unique per owner."""
    tag = Tag(owner=owner, name=_check_tag_name(owner=owner, name=name), contacts=[])
    return _save_tag(tag, force_insert=True)


def tag_rename(*, tag: Tag, name: str) -> Tag:
    tag.name = _check_tag_name(owner=tag.owner, name=name, exclude=tag.pk)
    return _save_tag(tag, update_fields=["name", "updated_at"])


def tag_remove_contacts(*, tag: Tag, contact_ids: Iterable[uuid.UUID | str]) -> int:
    """Take several contacts out of a tag, all or nothing; returns how many were members.

    Every id must be one of the tag owner's contacts (ContactNotFound otherwise).
    """
    manager = ContactTagManager()
    with transaction.atomic():
        return sum(manager.remove_contact_from_tag(tag.pk, cid) for cid in dict.fromkeys(contact_ids))
