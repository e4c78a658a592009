"""Preparing a task: its recipients expanded into subtasks, in chunks, mostly in the background.

``task_create`` validates the request and creates the task ``preparing``,
keeping a recipient list as one row (``task_recipient_lists``). The
preparation's first chunk stages the recipients, one row each, in
``task_recipients``: the list's, or the tag's members as they are then. A task of up
to ``INLINE_MAX`` recipients is prepared inside the request and answered
``pending``. A larger one is answered ``preparing`` and prepared by a
preparer: the Celery task ``queues.prepare_task`` when a broker is
configured, otherwise the maintenance thread of every ``run_scheduler``
(and ``manage.py prepare_tasks`` by hand).

Each chunk is one transaction that locks the task row (``FOR UPDATE SKIP
LOCKED``: two preparers never work on one task at the same moment, a second
one moves on), turns the next staged positions into subtasks, deletes those
staged rows, moves ``recipients_prepared`` past them and commits. A preparer
killed half-way leaves whole chunks done and the rest still staged; the next
one goes on from there, with neither duplicates nor gaps. The last chunk
makes the task pending and puts its owner in the rotation, as task_create
did before. The claim takes only pending and sending tasks, so nothing of a
task is sent before all its subtasks exist, and its completion cannot be
decided early either.

On PostgreSQL a chunk is three statements (contacts upserted, subtasks
inserted by ``INSERT … SELECT``, staged rows deleted); the subtask ids are
UUIDv7 built in SQL from stamps reserved in this process (``edm.ids``), in
recipient order, and the Message-ID is derived from the id as
``message_id_for`` does. SQLite goes through the ORM, chunk by chunk alike.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.db import connection, transaction

from contacts.exceptions import TagNotFound
from contacts.models import Contact
from contacts.tag_manager import ContactTagManager
from edm.dbclock import db_now
from edm.ids import uuid7, uuid7_stamps
from monitoring.services.task_wait import TaskWaitMonitorService
from queues.models import SubTask, Task, TaskRecipient, TaskRecipientList
from queues.rotation import user_queue_activate

logger = logging.getLogger(__name__)

# Up to this many recipients a task is prepared inside the request that creates it.
INLINE_MAX = 1000
PG_CHUNK = 20_000
SQLITE_CHUNK = 2_000
# A task preparing and untouched this long has no live preparer (sweep "resume_preparations").
STALE_SECONDS = 30


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
    return PG_CHUNK if connection.vendor == "postgresql" else SQLITE_CHUNK


# --- staging (inside task_create's transaction) ----------------------------------


def recipients_stage(*, task: Task, recipients: Sequence[StagedRecipient]) -> None:
    """Keep a validated recipient list with the task (one row) for its preparation to stage."""
    TaskRecipientList.objects.create(
        task=task, recipients=[[r.email, r.first_name, r.last_name, r.attributes] for r in recipients]
    )


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
            task.recipients_total = _stage_tag_members(task) if task.tag_id else _stage_list(task)
            task.recipients_staged = True
            created = 0
            done = task.recipients_total == 0
        else:
            created = _staged_chunk(task, size, now)
            task.recipients_prepared += created
            # Nothing made: no staged row was left, whatever the total said.
            done = created == 0 or task.recipients_prepared >= task.recipients_total
        if done:
            fields += _finish(task, now)
        task.save(update_fields=fields)
    return Chunk(task_id=task.pk, created=created, done=done)


def _finish(task: Task, now: dt.datetime) -> list[str]:
    """The task's last chunk is done: it may be sent from now on (or fails, with nobody to send to)."""
    task.recipients_total = task.recipients_prepared
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


def _stage_list(task: Task) -> int:
    """Copy the task's recipient list into the staged recipients (positions in list order); returns how many."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO task_recipients (task_id, position, email, first_name, last_name, attributes)
                SELECT l.task_id, r.position, r.item->>0, r.item->>1, r.item->>2, nullif(r.item->3, 'null'::jsonb)
                FROM task_recipient_lists l, jsonb_array_elements(l.recipients) WITH ORDINALITY AS r (item, position)
                WHERE l.task_id = %s
                """,
                [task.pk],
            )
            staged = cursor.rowcount
    else:
        listed = TaskRecipientList.objects.filter(task=task).values_list("recipients", flat=True).first() or []
        TaskRecipient.objects.bulk_create(
            (
                TaskRecipient(task=task, position=position, email=e, first_name=f, last_name=la, attributes=a)
                for position, (e, f, la, a) in enumerate(listed, 1)
            ),
            batch_size=SQLITE_CHUNK,
        )
        staged = len(listed)
    TaskRecipientList.objects.filter(task=task).delete()
    return staged


def _stage_tag_members(task: Task) -> int:
    """Copy the tag's members (contact id order) into the staged recipients; returns how many.

    Done once, as one chunk: the membership query reads the whole tag, and
    every later chunk reads only its own positions.
    """
    try:
        members = ContactTagManager().contacts_of_tag(task.tag_id).order_by("pk").values_list("pk", "email")
    except TagNotFound:
        return 0  # deleted before its task was prepared
    if connection.vendor == "postgresql":
        members_sql, params = members.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                INSERT INTO task_recipients (task_id, position, email, first_name, last_name, contact_id)
                SELECT %s, row_number() OVER (ORDER BY m.id), m.email, '', '', m.id
                FROM ({members_sql}) AS m (id, email)
                """,  # noqa: S608 - the ORM's SQL, with its parameters passed on
                [task.pk, *params],
            )
            return cursor.rowcount
    rows = [
        TaskRecipient(task=task, position=position, email=email, contact_id=contact_id)
        for position, (contact_id, email) in enumerate(members, 1)
    ]
    TaskRecipient.objects.bulk_create(rows, batch_size=SQLITE_CHUNK)
    return len(rows)


def _staged_chunk(task: Task, size: int, now: dt.datetime) -> int:
    """Positions recipients_prepared+1 .. +size: contacts upserted, subtasks made, staged rows deleted.

    Every staged position gives exactly one subtask (its contact may be gone,
    never the recipient), so the prepared count is the position cursor.
    """
    after = task.recipients_prepared
    upto = after + size
    if connection.vendor == "postgresql":
        created = _pg_staged_chunk(task, after, upto, size, now)
    else:
        created = _orm_staged_chunk(task, after, upto, now)
    TaskRecipient.objects.filter(task=task, position__lte=upto).delete()
    return created


# --- PostgreSQL: bulk SQL ------------------------------------------------------

# A UUIDv7 from ``stamp`` (48 bits of milliseconds and 12 of counter, as in
# edm.ids): the stamp and the version in the first 64 bits, then the last 64
# bits of a random (v4) UUID, whose variant bits are the ones v7 wants too.
_ID = (
    "(lpad(to_hex(((stamp >> 12) << 16) | 28672 | (stamp & 4095)), 16, '0')"
    " || right(replace(gen_random_uuid()::text, '-', ''), 16))::uuid"
)


def _pg_staged_chunk(task: Task, after: int, upto: int, size: int, now: dt.datetime) -> int:
    base = uuid7_stamps(size)
    with connection.cursor() as cursor:
        # A list's recipients become contacts (a tag's already are); existing ones are kept as they are.
        cursor.execute(
            """
            INSERT INTO contacts (id, owner_id, email, first_name, last_name, attributes, created_at, updated_at)
            SELECT gen_random_uuid(), %s, email, first_name, last_name, coalesce(attributes, '{}'::jsonb), %s, %s
            FROM task_recipients
            WHERE task_id = %s AND position > %s AND position <= %s AND contact_id IS NULL
            ORDER BY position
            ON CONFLICT (owner_id, email) DO NOTHING
            """,
            [task.owner_id, now, now, task.pk, after, upto],
        )
        cursor.execute(
            f"""
            WITH numbered AS (
                SELECT %s::bigint + r.position - %s - 1 AS stamp, r.email, coalesce(tc.id, lc.id) AS contact_id
                FROM task_recipients r
                LEFT JOIN contacts lc ON r.contact_id IS NULL AND lc.owner_id = %s AND lc.email = r.email
                LEFT JOIN contacts tc ON tc.id = r.contact_id
                WHERE r.task_id = %s AND r.position > %s AND r.position <= %s
            ), ided AS (SELECT {_ID} AS id, email, contact_id FROM numbered)
            INSERT INTO subtasks (
                id, task_id, owner_id, contact_id, recipient_email, status, priority, attempts, error_message,
                next_attempt_at, message_id, claimed_by, created_at, updated_at
            )
            SELECT id, %s, %s, contact_id, email, 'pending', %s, 0, '', %s,
                   '<' || replace(id::text, '-', '') || '@' || %s || '>', '', %s, %s
            FROM ided ORDER BY id
            """,  # noqa: S608 - constant fragments only
            [
                *(base, after, task.owner_id, task.pk, after, upto),
                *(task.pk, task.owner_id, task.priority, now, settings.EDM_MESSAGE_ID_DOMAIN, now, now),
            ],
        )
        return cursor.rowcount


# --- SQLite: the ORM ------------------------------------------------------------


def _orm_staged_chunk(task: Task, after: int, upto: int, now: dt.datetime) -> int:
    staged = list(TaskRecipient.objects.filter(task=task, position__gt=after, position__lte=upto).order_by("position"))
    listed = [r for r in staged if r.contact_id is None]
    Contact.objects.bulk_create(
        [
            Contact(
                owner_id=task.owner_id,
                email=r.email,
                first_name=r.first_name,
                last_name=r.last_name,
                attributes=r.attributes or {},
            )
            for r in listed
        ],
        ignore_conflicts=True,
    )
    by_email = dict(
        Contact.objects.filter(owner_id=task.owner_id, email__in=[r.email for r in listed]).values_list("email", "id")
    )
    members = {r.contact_id for r in staged if r.contact_id is not None}
    existing = set(Contact.objects.filter(pk__in=members).values_list("pk", flat=True))
    contacts = [
        (by_email.get(r.email) if r.contact_id is None else r.contact_id if r.contact_id in existing else None, r.email)
        for r in staged
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
