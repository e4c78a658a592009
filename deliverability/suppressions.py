"""Adding to and reading the suppression list."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Q

from deliverability.models import Suppression


def email_normalise(email: str) -> str:
    return email.strip().lower()


def suppression_add(
    *,
    owner_id: uuid.UUID | None,
    email: str,
    reason: str,
    source: str,
    task_id: uuid.UUID | None = None,
    subtask_id: uuid.UUID | None = None,
    service_id: uuid.UUID | None = None,
    detail: str = "",
) -> tuple[Suppression, bool]:
    """Suppress ``email`` for ``owner_id`` (None: platform-wide); returns (entry, created).

    Idempotent: an address already suppressed keeps its first entry (reason,
    source and time of the first event), whatever the later ones say.
    """
    email = email_normalise(email)
    existing = Suppression.objects.filter(owner_id=owner_id, email=email).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            entry = Suppression.objects.create(
                owner_id=owner_id,
                email=email,
                reason=reason,
                source=source,
                task_id=task_id,
                subtask_id=subtask_id,
                service_id=service_id,
                detail=detail,
            )
    except IntegrityError:  # added meanwhile by another process
        return Suppression.objects.get(owner_id=owner_id, email=email), False
    return entry, True


def suppressed_among(*, owner_id: uuid.UUID, emails: Iterable[str]) -> set[str]:
    """The lowercased addresses of ``emails`` that ``owner_id``'s mail must not go to (own or platform list)."""
    wanted = {email_normalise(e) for e in emails}
    if not wanted:
        return set()
    return set(
        Suppression.objects.filter(Q(owner_id=owner_id) | Q(owner__isnull=True), email__in=wanted).values_list(
            "email", flat=True
        )
    )


def suppression_remove(*, entry: Suppression) -> None:
    """Take an address off its list: from the next claim on, mail goes to it again."""
    entry.delete()


@dataclass(frozen=True)
class SuppressionEntry:
    """One address to suppress, with its evidence: suppression_add's arguments, for suppressions_add_many."""

    owner_id: uuid.UUID | None
    email: str
    reason: str
    source: str
    task_id: uuid.UUID | None = None
    subtask_id: uuid.UUID | None = None
    service_id: uuid.UUID | None = None
    detail: str = ""


def suppressions_add_many(*, entries: Iterable[SuppressionEntry]) -> None:
    """suppression_add for many addresses in one statement (the recorder's batch).

    The same rules: addresses lowercased, an address already suppressed keeps
    its first entry (ON CONFLICT DO NOTHING), so it is idempotent. Runs in
    the caller's transaction. Entries go in (owner, email) order, so two
    batches inserting the same addresses wait for each other instead of deadlocking.
    """
    rows: dict[tuple[str, str], Suppression] = {}
    for entry in entries:
        email = email_normalise(entry.email)
        key = (str(entry.owner_id or ""), email)
        rows.setdefault(
            key,
            Suppression(
                owner_id=entry.owner_id,
                email=email,
                reason=entry.reason,
                source=entry.source,
                task_id=entry.task_id,
                subtask_id=entry.subtask_id,
                service_id=entry.service_id,
                detail=entry.detail,
            ),
        )
    if not rows:
        return
    Suppression.objects.bulk_create([rows[key] for key in sorted(rows)], ignore_conflicts=True)
