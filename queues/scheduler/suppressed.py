"""Picked recipients on a suppression list: marked ``suppressed`` inside the claim, before any service is charged.

The claim checks every subtask it picked, whenever the address was
suppressed (before the task was created or after): the owner's list and the
platform-wide one. The rows are already locked by the pick; those found
suppressed end here, so no rate slot, quota or connection is spent on them.
One statement per claim on PostgreSQL; SQLite reads the list once per claim.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict

from django.db import connection
from django.db.models import Q

from deliverability.models import Suppression
from deliverability.suppressions import email_normalise
from queues.models import SubTask, Task
from queues.scheduler import pgsql

# What the claim's pick yields per subtask: (owner, subtask, task, task status, recipient).
Pick = tuple[uuid.UUID, uuid.UUID, uuid.UUID, str, str]
PLATFORM_NOTE = " (platform-wide list)"


def picks_drop_suppressed(
    *, picks: list[Pick], now: dt.datetime
) -> tuple[list[Pick], list[tuple[uuid.UUID, uuid.UUID]]]:
    """Mark the picked subtasks whose recipient is suppressed; returns (picks still to send, (subtask, task) marked).

    Their tasks start sending if they had not (as a claim's do), so that a
    task left with nothing else to send is finished by the caller, or by the
    stuck-task recovery if that step is lost.
    """
    if not picks:
        return picks, []
    if connection.vendor == "postgresql":
        marked = pgsql.suppress_picked(
            ids=[p[1] for p in picks],
            owners=[p[0] for p in picks],
            emails=[email_normalise(p[4]) for p in picks],
            now=now,
            platform_note=PLATFORM_NOTE,
        )
    else:
        marked = _suppress_portable(picks, now)
    if not marked:
        return picks, []
    suppressed = [(p[1], p[2]) for p in picks if p[1] in marked]
    Task.objects.filter(pk__in={task_id for _, task_id in suppressed}, status=Task.Status.PENDING).update(
        status=Task.Status.SENDING, updated_at=now
    )
    return [p for p in picks if p[1] not in marked], suppressed


def _suppress_portable(picks: list[Pick], now: dt.datetime) -> set[uuid.UUID]:
    # One owner may have the same address picked twice (in two of its tasks).
    wanted = [(p[0], email_normalise(p[4]), p[1]) for p in picks]
    entries = Suppression.objects.filter(
        Q(owner_id__in={w[0] for w in wanted}) | Q(owner__isnull=True), email__in={w[1] for w in wanted}
    ).values_list("owner_id", "email", "reason")
    own = {(owner, email): reason for owner, email, reason in entries if owner is not None}
    platform = {email: reason for owner, email, reason in entries if owner is None}
    by_message: dict[str, list[uuid.UUID]] = defaultdict(list)
    for owner, email, subtask_id in wanted:
        if (owner, email) in own:
            by_message[f"suppressed: {own[(owner, email)]}"].append(subtask_id)
        elif email in platform:
            by_message[f"suppressed: {platform[email]}{PLATFORM_NOTE}"].append(subtask_id)
    for message, ids in by_message.items():
        SubTask.objects.filter(pk__in=ids).update(
            status=SubTask.Status.SUPPRESSED, error_message=message, updated_at=now
        )
    return {subtask_id for ids in by_message.values() for subtask_id in ids}
