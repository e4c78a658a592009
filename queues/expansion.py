"""Preparing a task: its recipients expanded into subtasks, in chunks, mostly in the background.

``task_create`` validates the request and creates the task ``preparing``,
with a recipient list stored in order in a few rows (``task_recipient_parts``,
one JSON list of up to a chunk's recipients each); a tag task's
first chunk copies the tag's members there as they are then. A task of up
to ``INLINE_MAX`` recipients is prepared inside the request and answered
``pending``. A larger one is answered ``preparing`` and prepared by a
preparer: the Celery task ``queues.prepare_task`` when a broker is
configured, otherwise the maintenance thread of every ``run_scheduler``
(and ``manage.py prepare_tasks`` by hand).

Each chunk is one transaction that locks the task row (``FOR UPDATE SKIP
LOCKED``: two preparers never work on one task at the same moment, a second
one moves on), turns the next positions into subtasks, deletes the parts it
has used up, moves ``recipients_prepared`` past them and commits. A preparer
killed half-way leaves whole chunks done and the rest still in parts; the
next one goes on from there, with neither duplicates nor gaps. The last chunk
makes the task pending and puts its owner in the rotation, as task_create
did before. The claim takes only pending and sending tasks, so nothing of a
task is sent before all its subtasks exist, and its completion cannot be
decided early either.

On PostgreSQL a chunk is one statement (then the used-up parts are
deleted): the chunk's entries read out of the parts' JSON, each with its
existing contact (held ``FOR KEY SHARE``), a list's missing contacts
inserted, the subtasks inserted by ``INSERT … SELECT``. The ids (subtasks'
and new contacts') are UUIDv7 built in SQL from stamps reserved in this
process (``common.ids``), in recipient order, and the Message-ID is the
subtask id's hex as ``message_id_for`` writes it. SQLite goes through the
ORM, chunk by chunk alike.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import F, QuerySet

from common.dbclock import db_now
from common.ids import uuid7, uuid7_stamps
from contacts.exceptions import TagNotFound
from contacts.models import Contact
from contacts.tag_manager import ContactTagManager
from queues.first_send_wait import TaskWaitMonitorService
from queues.models import SubTask, Task, TaskRecipientPart
from queues.rotation import user_queue_activate

logger = logging.getLogger(__name__)

# Up to this many recipients a task is prepared inside the request that creates it.
INLINE_MAX = 1000
PG_CHUNK = 20_000
SQLITE_CHUNK = 2_000
# A task preparing and untouched this long has no live preparer (sweep "resume_preparations").
STALE_SECONDS = 30
# Enough to sort and number a tag of 100,000 members in memory (the default 4 MB spills to disk).
STAGING_WORK_MEM = "64MB"


class StagedRecipient(Protocol):
    email: str
    first_name: str
    last_name: str
    attributes: dict | None


@dataclass(frozen=True)
class Chunk:
    task_id: uuid.UUID
    created: int
    done: bool  # the task is prepared (pending, or failed for want of recipients)


def message_id_for(subtask_id: uuid.UUID) -> str:
    """The subtask's Message-ID, generated once and used on every attempt."""
    return f"<{subtask_id.hex}@{settings.EDM_MESSAGE_ID_DOMAIN}>"


def chunk_size() -> int:
    """Recipients per chunk by default, and per part: a chunk of that size reads one part."""
    return PG_CHUNK if connection.vendor == "postgresql" else SQLITE_CHUNK


# --- staging ---------------------------------------------------------------------


def recipients_stage(*, task: Task, recipients: Sequence[StagedRecipient]) -> None:
    """Store a validated recipient list with the task (inside task_create's transaction), in parts."""
    entries = [[r.email, r.first_name, r.last_name, r.attributes] for r in recipients]
    _parts_create(task, entries)


def _parts_create(task: Task, entries: list[list]) -> None:
    # One INSERT per part: bulk_create would pass the JSON values as one
    # PostgreSQL array literal, which the driver quotes character by character
    # (0.9 s for 100,000 recipients, against 0.04 s for the JSON itself).
    size = chunk_size()
    for start in range(0, len(entries), size):
        part = entries[start : start + size]
        TaskRecipientPart.objects.create(task=task, start=start, size=len(part), recipients=part)


def _stage_tag_members(task: Task) -> int:
    """Copy the tag's members (contact id order) into the task's parts; returns how many.

    Done once, as one chunk: the membership query reads the whole tag, and
    every later chunk reads only its own positions.
    """
    manager = ContactTagManager()
    try:
        if connection.vendor != "postgresql":
            members = manager.contacts_of_tag(task.tag_id).order_by("pk").values_list("pk", "email")
            _parts_create(task, [[email, str(pk)] for pk, email in members])
            return len(members)
        try:
            with transaction.atomic():  # a savepoint: a malformed entry undoes only this attempt
                return _pg_stage_members(task, manager.contacts_of_tag(task.tag_id, guard=False))
        except DataError:
            return _pg_stage_members(task, manager.contacts_of_tag(task.tag_id))
    except TagNotFound:
        return 0  # deleted before its task was prepared


def _pg_stage_members(task: Task, members: QuerySet[Contact]) -> int:
    members_sql, params = members.order_by().values_list("pk", "email").query.sql_with_params()
    size = chunk_size()
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('work_mem', %s, true)", [STAGING_WORK_MEM])
        cursor.execute(
            f"""
            INSERT INTO task_recipient_parts (task_id, start, size, recipients)
            SELECT %s, part * %s, count(*), jsonb_agg(jsonb_build_array(email, id) ORDER BY id)
            FROM (
                SELECT m.id, m.email, (row_number() OVER (ORDER BY m.id) - 1) / %s AS part
                FROM ({members_sql}) AS m (id, email)
            ) AS numbered
            GROUP BY part
            RETURNING size
            """,  # noqa: S608 - the ORM's SQL, with its parameters passed on
            [task.pk, size, size, *params],
        )
        return sum(row[0] for row in cursor.fetchall())


# --- one chunk ------------------------------------------------------------------


def task_prepare_chunk(*, task_id: uuid.UUID | None = None, size: int | None = None) -> Chunk | None:
    """Expand the next chunk of a preparing task (this one, or the oldest no one else holds).

    Returns None when there is no such task free to work on.
    """
    size = size or chunk_size()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # A chunk's commit does not wait for its WAL to reach disk (most of a
            # chunk's time otherwise). A database crash can lose the last chunks
            # committed, their progress with them: the preparation redoes them.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        preparing = Task.objects.select_for_update(skip_locked=True).filter(status=Task.Status.PREPARING)
        task = preparing.filter(pk=task_id).first() if task_id else preparing.order_by("created_at").first()
        if task is None:
            return None
        now = db_now()  # next_attempt_at and ready times are compared by claims
        fields = ["recipients_prepared", "recipients_total", "recipients_staged", "updated_at"]
        if not task.recipients_staged:
            # A tag task (a list is stored in parts with its task). A tag deleted
            # before this point leaves nobody to send to.
            task.recipients_total = _stage_tag_members(task) if task.tag_id else 0
            task.recipients_staged = True
            created = 0
            done = task.recipients_total == 0
        else:
            created = _staged_chunk(task, size, now)
            task.recipients_prepared += created
            # Nothing made: no position was left, whatever the total said.
            done = created == 0 or task.recipients_prepared >= task.recipients_total
        if done:
            fields += _finish(task, now)
        task.save(update_fields=fields)
    return Chunk(task_id=task.pk, created=created, done=done)


def _finish(task: Task, now: dt.datetime) -> list[str]:
    """The task's last chunk is done: it may be sent from now on (or fails, with nobody to send to)."""
    task.recipients_total = task.recipients_prepared
    TaskRecipientPart.objects.filter(task=task).delete()  # none is left, unless the total said fewer
    if task.recipients_prepared == 0:
        task.status = Task.Status.FAILED
        task.failure_reason = "no recipients: the tag has no contacts"
        task.completed_at = now
        return ["status", "failure_reason", "completed_at"]
    task.status = Task.Status.PENDING
    entry = max(now, task.scheduled_at) if task.scheduled_at else now
    TaskWaitMonitorService.record_task_entry(task_id=task.pk, user_id=task.owner_id, entry_time=entry)
    user_queue_activate(user_ids=[task.owner_id], at=entry)
    return ["status"]


def _staged_chunk(task: Task, size: int, now: dt.datetime) -> int:
    """Positions recipients_prepared+1 .. +size: contacts upserted, subtasks made, used-up parts deleted.

    Every position gives exactly one subtask (its contact may be gone, never
    the recipient), so the prepared count is the position cursor.
    """
    after = task.recipients_prepared
    upto = after + size
    if connection.vendor == "postgresql":
        created = _pg_staged_chunk(task, after, upto, size, now)
    else:
        created = _orm_staged_chunk(task, after, upto, now)
    TaskRecipientPart.objects.filter(task=task, start__lte=upto - F("size")).delete()
    return created


# --- PostgreSQL: bulk SQL ------------------------------------------------------


def _hex_stamp(stamp: str) -> str:
    """SQL for the first 16 hex digits of a UUIDv7 from ``stamp`` (48 bits of milliseconds and 12 of
    counter, as in common.ids) and the version."""
    return f"lpad(to_hex((({stamp} >> 12) << 16) | 28672 | ({stamp} & 4095)), 16, '0')"


# The chunk's entries in position order (the parts by their index, each one's
# entries in order, so rows are inserted in the order of their ids, at the
# right edge of the indexes, with no sort), each with:
# - ``i``, its index in the chunk: its stamps are stamps + i (its contact's,
#   if it creates one) and stamps + size + i (its subtask's); an id is the
#   stamp's 16 hex digits then the chunk's random ``tail`` (with v7's variant
#   bits), unique as stamps are unique in this process;
# - ``member``: a tag's member ([email, contact_id]), or a list's recipient;
# - ``contact_id``: the contact it names (a member's) or the one of its
#   address (a recipient's), if there is one, locked FOR KEY SHARE.
#
# Every subtask's contact is then one that this transaction creates or holds
# FOR KEY SHARE: a contact deleted meanwhile is not found (its subtask has
# none, like a tag's member deleted since its task was created), and a
# delete that comes later waits for the chunk to commit (contacts are
# deleted with their rows locked first: contacts.services.contacts_delete).
# subtasks.contact_id needs no constraint, nor task_id (the chunk holds its
# task locked) and owner_id (the task's); their checks, one query per row and
# constraint at commit, were half of a chunk's time.
_ENTRIES = """
    SELECT i, item, member,
           CASE WHEN member THEN (SELECT id FROM contacts WHERE id = (item->>1)::uuid FOR KEY SHARE)
                ELSE (SELECT id FROM contacts WHERE owner_id = %(owner)s AND email = item->>0 FOR KEY SHARE)
           END AS contact_id
    FROM (
        SELECT p.start + e.n - %(after)s - 1 AS i, e.item, jsonb_array_length(e.item) = 2 AS member
        FROM task_recipient_parts p, jsonb_array_elements(p.recipients) WITH ORDINALITY AS e (item, n)
        WHERE p.task_id = %(task)s AND p.start < %(upto)s AND p.start + e.n > %(after)s AND p.start + e.n <= %(upto)s
    ) AS e
"""

_CONTACT_ID = f"({_hex_stamp('%(stamps)s::bigint + i')} || %(tail)s)::uuid"

# A list's recipients without a contact get one; the others' are kept as
# they are. A concurrent transaction that creates one of them first makes the
# insert fail on the unique constraint (rare): the chunk then takes those
# with _UPSERT_CONTACTS and runs again.
_CHUNK_SQL = f"""
    WITH entries AS MATERIALIZED ({_ENTRIES}),
    created AS (
        INSERT INTO contacts (id, owner_id, email, first_name, last_name, attributes, created_at, updated_at)
        SELECT {_CONTACT_ID}, %(owner)s, item->>0, item->>1, item->>2, coalesce(nullif(item->3, 'null'), '{{}}'),
               %(now)s, %(now)s
        FROM entries
        WHERE NOT member AND contact_id IS NULL
    ), ided AS (
        SELECT {_hex_stamp("%(stamps)s::bigint + %(size)s + i")} || %(tail)s AS hex, item->>0 AS email,
               coalesce(contact_id, CASE WHEN NOT member THEN {_CONTACT_ID} END) AS contact_id
        FROM entries
    )
    INSERT INTO subtasks (
        id, task_id, owner_id, contact_id, recipient_email, status, priority, attempts, error_message,
        next_attempt_at, message_id, claimed_by, created_at, updated_at
    )
    SELECT hex::uuid, %(task)s, %(owner)s, contact_id, email, 'pending', %(priority)s, 0, '', %(now)s,
           '<' || hex || '@' || %(domain)s || '>', '', %(now)s, %(now)s
    FROM ided
"""  # noqa: S608 - constant fragments only

_UPSERT_CONTACTS = f"""
    INSERT INTO contacts (id, owner_id, email, first_name, last_name, attributes, created_at, updated_at)
    SELECT {_CONTACT_ID}, %(owner)s, item->>0, item->>1, item->>2, coalesce(nullif(item->3, 'null'), '{{}}'),
           %(now)s, %(now)s
    FROM ({_ENTRIES}) AS e
    WHERE NOT member AND contact_id IS NULL
    ON CONFLICT (owner_id, email) DO NOTHING
"""  # noqa: S608 - constant fragments only


def _pg_staged_chunk(task: Task, after: int, upto: int, size: int, now: dt.datetime) -> int:
    params = {
        # One range of stamps: the first half for new contacts, the second for subtasks.
        "stamps": uuid7_stamps(2 * size),
        "size": size,
        "tail": f"{(0b10 << 62) | secrets.randbits(62):016x}",
        "after": after,
        "upto": upto,
        "task": task.pk,
        "owner": task.owner_id,
        "priority": task.priority,
        "now": now,
        "domain": settings.EDM_MESSAGE_ID_DOMAIN,
    }
    with connection.cursor() as cursor:
        try:
            with transaction.atomic():  # a savepoint, for the rare retry
                cursor.execute(_CHUNK_SQL, params)
        except IntegrityError:
            cursor.execute(_UPSERT_CONTACTS, params)
            cursor.execute(_CHUNK_SQL, params)
        return cursor.rowcount


# --- SQLite: the ORM ------------------------------------------------------------


def _orm_entries(task: Task, after: int, upto: int) -> list[list]:
    """The entries at positions after+1 .. upto, in order."""
    entries = []
    for start, recipients in (
        TaskRecipientPart.objects.filter(task=task, start__lt=upto).order_by("start").values_list("start", "recipients")
    ):
        entries += recipients[max(after - start, 0) : upto - start]
    return entries


def _orm_staged_chunk(task: Task, after: int, upto: int, now: dt.datetime) -> int:
    entries = _orm_entries(task, after, upto)
    listed = [e for e in entries if len(e) == 4]  # a tag's member is [email, contact_id]
    Contact.objects.bulk_create(
        [
            Contact(owner_id=task.owner_id, email=email, first_name=first, last_name=last, attributes=attributes or {})
            for email, first, last, attributes in listed
        ],
        ignore_conflicts=True,
    )
    by_email = dict(
        Contact.objects.filter(owner_id=task.owner_id, email__in=[e[0] for e in listed]).values_list("email", "id")
    )
    members = {uuid.UUID(e[1]) for e in entries if len(e) == 2}
    existing = {str(pk) for pk in Contact.objects.filter(pk__in=members).values_list("pk", flat=True)}
    contacts = [
        (by_email.get(e[0]) if len(e) == 4 else uuid.UUID(e[1]) if e[1] in existing else None, e[0]) for e in entries
    ]
    return _orm_create_subtasks(task, contacts, now)


def _orm_create_subtasks(task: Task, contacts: list[tuple[uuid.UUID | None, str]], now: dt.datetime) -> int:
    subtasks = []
    for contact_id, email in contacts:
        subtask_id = uuid7()
        subtasks.append(
            SubTask(
                id=subtask_id,
                task_id=task.pk,
                owner_id=task.owner_id,
                contact_id=contact_id,
                recipient_email=email,
                priority=task.priority,
                message_id=message_id_for(subtask_id),
                next_attempt_at=now,
            )
        )
    SubTask.objects.bulk_create(subtasks, batch_size=SQLITE_CHUNK)
    return len(subtasks)


# --- preparers -------------------------------------------------------------------


def task_prepare_all(*, task: Task) -> Task:
    """Prepare the task to the end here and now (task_create's small tasks); returns it reloaded."""
    while not task_prepare_chunk(task_id=task.pk).done:
        pass
    task.refresh_from_db()
    return task


def tasks_prepare(
    *,
    task_id: uuid.UUID | None = None,
    size: int | None = None,
    seconds: float | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Prepare chunk after chunk (of this task, or of every preparing task) until there is none left
    free to work on, ``seconds`` have passed or ``stop`` is set; returns the subtasks created."""
    deadline = None if seconds is None else time.monotonic() + seconds
    created = 0
    while not (stop is not None and stop.is_set()) and (deadline is None or time.monotonic() < deadline):
        chunk = task_prepare_chunk(task_id=task_id, size=size)
        if chunk is None:
            break
        created += chunk.created
        if chunk.done:
            logger.info("task prepared", extra={"task": str(chunk.task_id)})
    return created


def preparations_pending() -> bool:
    """Is any task still preparing? (Its subtasks are work to come: ``run_scheduler --until-empty`` waits.)"""
    return Task.objects.filter(status=Task.Status.PREPARING).exists()


def preparation_enqueue(task_id: uuid.UUID) -> None:
    """Hand a preparing task to Celery; without a broker the schedulers' maintenance thread prepares it.

    Call it once the task is committed (transaction.on_commit). A broker that
    cannot be reached loses nothing: the resume_preparations sweep queues the
    task again.
    """
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return
    from kombu.exceptions import OperationalError as BrokerError

    from queues.tasks import prepare_task_task

    try:
        prepare_task_task.delay(str(task_id))
    except BrokerError as exc:
        logger.warning("could not queue a task's preparation", extra={"task": str(task_id), "error": str(exc)})


def preparations_resume() -> dict:
    """Queue again the preparing tasks nobody has moved for STALE_SECONDS (their preparer died, or the message
    was lost). Without a broker there is nothing to do: run_scheduler's maintenance thread prepares every one."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return {"preparations_queued": 0}
    horizon = db_now() - dt.timedelta(seconds=STALE_SECONDS)
    stale = list(Task.objects.filter(status=Task.Status.PREPARING, updated_at__lt=horizon).values_list("pk", flat=True))
    for task_id in stale:
        transaction.on_commit(lambda task_id=task_id: preparation_enqueue(task_id))
    return {"preparations_queued": len(stale)}
