"""A suppression list in and out as CSV.

Import: one address per line, ``email[,reason]`` (reason empty: manual). A
first row naming an ``email`` column is a header; with one, the columns are
taken by name (``email``, and optionally ``reason`` and ``detail``; others
are ignored), so an export imports again as it is. Lines are numbered as a
text editor shows them (the first line is 1). Good lines are added even when
others are bad; each bad line is counted, and the first ERRORS_SHOWN of them
are reported with why. Addresses already on the list keep their entry.

Export: ``email,reason,source,detail,created_at``, a header and one row per entry.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet

from contacts.services import email_errors
from deliverability.models import Suppression
from deliverability.suppressions import email_normalise

MAX_LINES = 100_000
_CHUNK = 1000
MAX_DETAIL = 2000
ERRORS_SHOWN = 100
SOURCE = "import"
EXPORT_COLUMNS = ("email", "reason", "source", "detail", "created_at")


@dataclass
class ImportResult:
    added: int = 0
    already_present: int = 0
    invalid: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)  # the first ERRORS_SHOWN bad lines

    def refuse(self, line: int, email: str, error: str) -> None:
        self.invalid += 1
        if len(self.errors) < ERRORS_SHOWN:
            self.errors.append({"line": line, "email": email[:254], "error": error})


@dataclass(frozen=True)
class _Line:
    number: int
    email: str
    reason: str
    detail: str


def suppressions_import_csv(*, owner_id: Any, text: str) -> ImportResult:
    """Add the CSV's addresses to ``owner_id``'s list (None: the platform's); a broken file raises ValidationError
    and adds nothing.

    As suppression_add does for one address, in bulk: an address already on
    the list (or earlier in the file) keeps its first entry.
    """
    result = ImportResult()
    lines = _parse(text, result)
    with transaction.atomic():
        for start in range(0, len(lines), _CHUNK):
            _add(owner_id, lines[start : start + _CHUNK], result)
    return result


def _add(owner_id: Any, lines: list[_Line], result: ImportResult) -> None:
    present = set(
        Suppression.objects.filter(owner_id=owner_id, email__in={line.email for line in lines}).values_list(
            "email", flat=True
        )
    )
    new: dict[str, Suppression] = {}
    for line in lines:
        if line.email not in present and line.email not in new:
            new[line.email] = Suppression(
                owner_id=owner_id, email=line.email, reason=line.reason, source=SOURCE, detail=line.detail
            )
    # Added meanwhile by another process: kept as it is, like suppression_add does.
    Suppression.objects.bulk_create(new.values(), ignore_conflicts=True)
    added = Suppression.objects.filter(pk__in=[entry.pk for entry in new.values()]).count() if new else 0
    result.added += added
    result.already_present += len(lines) - added


def _file_error(message: str) -> ValidationError:
    return ValidationError({"file": [message]})


def _parse(text: str, result: ImportResult) -> list[_Line]:
    """Every good line, checked before anything is added (a file that turns out unreadable adds nothing)."""
    if "\x00" in text:
        raise _file_error("the file contains NUL characters")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    lines: list[_Line] = []
    columns: dict[str, int] | None = None
    first = True  # the first line that is not blank may be a header
    try:
        for cells in reader:
            number = reader.line_num
            if number > MAX_LINES:
                raise _file_error(f"at most {MAX_LINES} lines per import")
            if not any(cell.strip() for cell in cells):
                continue  # blank lines, as spreadsheets often leave at the end
            if first and "email" in (cell.strip().lower() for cell in cells):
                first = False
                columns = _header(cells)
                continue
            first = False
            line = _line(number, cells, columns, result)
            if line is not None:
                lines.append(line)
    except csv.Error as exc:
        raise _file_error(f"not a readable CSV file: {exc}") from None
    if not lines and not result.invalid:
        raise _file_error("the file holds no addresses")
    return lines


def _header(cells: list[str]) -> dict[str, int]:
    names = [cell.strip().lower() for cell in cells]
    duplicates = sorted({name for name in names if name and names.count(name) > 1})
    if duplicates:
        raise _file_error(f"columns named more than once: {', '.join(duplicates)}")
    return {name: i for i, name in enumerate(names) if name in ("email", "reason", "detail")}


def _line(number: int, cells: list[str], columns: dict[str, int] | None, result: ImportResult) -> _Line | None:
    if columns is None:
        if len(cells) > 2:
            result.refuse(number, cells[0], f"{len(cells)} cells; a line is email[,reason]")
            return None
        columns = {"email": 0, "reason": 1}

    def cell(name: str) -> str:
        i = columns.get(name)
        return cells[i].strip() if i is not None and i < len(cells) else ""

    raw = cell("email")
    email = email_normalise(raw)
    reason = cell("reason").lower() or Suppression.Reason.MANUAL
    detail = cell("detail")
    if not email:
        error = "the email cell is empty"
    elif problems := email_errors(email):
        error = problems[0]
    elif reason not in Suppression.Reason.values:
        error = f"unknown reason {reason[:40]!r}; one of {', '.join(Suppression.Reason.values)}"
    elif len(detail) > MAX_DETAIL:
        error = f"detail: at most {MAX_DETAIL} characters"
    else:
        return _Line(number=number, email=email, reason=reason, detail=detail)
    result.refuse(number, raw, error)
    return None


class _Echo:
    """A file-like object whose write returns the line: csv.writer then yields text for streaming."""

    def write(self, value: str) -> str:
        return value


def suppressions_export_csv(entries: QuerySet[Suppression]) -> Iterator[str]:
    """The entries as CSV lines (header first), read from the database in chunks."""
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_COLUMNS)
    rows: Iterable[tuple] = entries.values_list(*EXPORT_COLUMNS).iterator(chunk_size=2000)
    for email, reason, source, detail, created_at in rows:
        yield writer.writerow((email, reason, source, detail, created_at.isoformat()))
