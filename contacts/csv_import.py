"""Import contacts from CSV: create new addresses, update known ones, report bad rows.

The first row names the columns. ``email`` is required; ``first_name`` and
``last_name`` fill the contact's names; any other named column goes into the
contact's ``attributes`` (merge fields). Rows are numbered as a spreadsheet
shows them: the header is row 1, the first contact row 2.

Good rows are applied even when others are bad (an import of 10,000 rows
should not fail for one typo), and every bad row is reported with its number.
An empty cell leaves the stored value alone, so a file with only some columns
filled in never wipes what the contact already had.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from contacts.models import Contact
from contacts.services import NAME_MAX, email_errors, normalise_email

MAX_ROWS = 100_000
MAX_CELL = 1000  # characters in one attribute cell
NAME_COLUMNS = ("first_name", "last_name")
_CHUNK = 1000


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Row:
    number: int
    email: str
    names: dict[str, str]
    attributes: dict[str, str]


def contacts_import_csv(*, owner, text: str) -> ImportResult:
    """Create or update the owner's contacts from CSV text; a broken file raises ValidationError."""
    result = ImportResult()
    rows = _parse(text, result)
    try:
        with transaction.atomic():
            for start in range(0, len(rows), _CHUNK):
                _apply(owner, rows[start : start + _CHUNK], result)
    except IntegrityError:
        # Another request stored one of these addresses while we imported.
        raise _file_error("contacts changed during the import; nothing was saved, send it again") from None
    return result


def _file_error(message: str) -> ValidationError:
    return ValidationError({"file": [message]})


def _header(reader) -> list[str]:
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise _file_error("the file is empty; its first row must name the columns") from None
    keys = [name.lower() for name in header]
    if "email" not in keys:
        raise _file_error("the header row has no 'email' column")
    duplicates = sorted({key for key in keys if key and keys.count(key) > 1})
    if duplicates:
        raise _file_error(f"columns named more than once: {', '.join(duplicates)}")
    return header


def _parse(text: str, result: ImportResult) -> list[_Row]:
    if "\x00" in text:
        raise _file_error("the file contains NUL characters")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = _header(reader)
        rows: list[_Row] = []
        seen: dict[str, int] = {}
        for number, cells in enumerate(reader, start=2):
            if number - 1 > MAX_ROWS:
                raise _file_error(f"at most {MAX_ROWS} rows per import")
            if not any(cell.strip() for cell in cells):
                continue  # blank lines, as spreadsheets often leave at the end
            row = _row(number, header, cells, seen, result)
            if row is not None:
                rows.append(row)
    except csv.Error as exc:
        raise _file_error(f"not a readable CSV file: {exc}") from None
    return rows


def _row(number: int, header: list[str], cells: list[str], seen: dict[str, int], result: ImportResult) -> _Row | None:
    values = dict(zip((name.lower() for name in header), (cell.strip() for cell in cells), strict=False))
    email = normalise_email(values.get("email", ""))
    errors = [] if values.get("email") else ["the email cell is empty"]
    if len(cells) > len(header):
        errors.append(f"{len(cells)} cells but the header names {len(header)} columns")
    if not errors:
        errors += email_errors(email)
    names = {key: values[key] for key in NAME_COLUMNS if values.get(key)}
    errors += [f"{key}: at most {NAME_MAX} characters" for key, value in names.items() if len(value) > NAME_MAX]
    attributes = {
        name: cell.strip()
        for name, cell in zip(header, cells, strict=False)
        if name and name.lower() not in ("email", *NAME_COLUMNS) and cell.strip()
    }
    errors += [f"{name}: at most {MAX_CELL} characters" for name, value in attributes.items() if len(value) > MAX_CELL]
    if not errors and email.lower() in seen:
        errors.append(f"the same address as row {seen[email.lower()]}")
    if errors:
        result.errors.append({"row": number, "email": values.get("email", ""), "errors": errors})
        return None
    seen[email.lower()] = number
    return _Row(number=number, email=email, names=names, attributes=attributes)


def _apply(owner, rows: list[_Row], result: ImportResult) -> None:
    existing = {c.email: c for c in Contact.objects.filter(owner=owner, email__in=[r.email for r in rows])}
    now = timezone.now()
    new, changed = [], []
    for row in rows:
        contact = existing.get(row.email)
        if contact is None:
            new.append(Contact(owner=owner, email=row.email, attributes=row.attributes, **row.names))
            continue
        for key, value in row.names.items():
            setattr(contact, key, value)
        contact.attributes = {**(contact.attributes or {}), **row.attributes}
        contact.updated_at = now
        changed.append(contact)
    Contact.objects.bulk_create(new)
    Contact.objects.bulk_update(changed, ["first_name", "last_name", "attributes", "updated_at"])
    result.created += len(new)
    result.updated += len(changed)
