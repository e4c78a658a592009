"""Task lifecycle: the functions the admin, the API, commands and tests all call.

Every function validates first and writes in one transaction, so bad input
changes nothing.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator, validate_email
from django.db import connection, transaction
from django.db.models import Count, Exists, Func, IntegerField, OuterRef, ProtectedError, QuerySet
from django.utils import timezone

from common.dbclock import db_now
from common.errors import ConflictError, InputError
from contacts.models import Contact, Tag
from queues import signals
from queues.expansion import INLINE_MAX, preparation_enqueue, recipients_stage, task_prepare_all
from queues.expansion import message_id_for as message_id_for  # its home before queues.expansion
from queues.models import EmailService, SendAttempt, SubTask, Task, TaskRecipientPart, TaskWaitMetric, UserQueue
from queues.rotation import user_queue_activate
from queues.templates import TemplateError, compile_template
from queues.templates_check import TEMPLATE_FIELDS, template_variables_errors
from queues.wakeup import notify_work

logger = logging.getLogger(__name__)

MAX_SUBJECT = 998
MAX_NAME = 200  # Task.name
MAX_EMAIL = 254
MAX_BODY = 1_000_000  # characters, per body
RUNNABLE = (Task.Status.PENDING, Task.Status.SENDING)
# Parked subtasks keep their task open until an operator decides.
NOT_TERMINAL = (
    SubTask.Status.PENDING,
    SubTask.Status.ALLOCATED,
    SubTask.Status.PROCESSING,
    SubTask.Status.PARKED,
)


class TaskError(Exception):
    """Base of the task lifecycle's domain errors."""


class TaskValidationError(TaskError, InputError):
    """Input that cannot make a task; ``errors`` maps a field to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.items()))


class TaskStateError(TaskError, ConflictError):
    """The object is not in a state that allows the action; ``errors`` names the fields refused, if any."""

    def __init__(self, message: str, errors: dict[str, list[str]] | None = None) -> None:
        self.errors = errors or {}
        super().__init__(message)


class InFlightError(TaskStateError):
    """Mail is being sent right now: deleting the rows under it would break its record."""


@dataclass(frozen=True)
class Recipient:
    email: str
    first_name: str = ""
    last_name: str = ""
    attributes: dict | None = None


def normalise_email(address: str) -> str:
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}"


def parse_recipients(raw: Iterable[Any]) -> list[Recipient]:
    """Validate a recipient list (addresses, or objects with email and fields); duplicates dropped."""
    recipients: dict[str, Recipient] = {}
    errors = []
    for index, item in enumerate(raw):
        if isinstance(item, str):
            item = {"email": item}
        if not isinstance(item, dict) or not isinstance(item.get("email"), str):
            errors.append(f"item {index}: expected an address or an object with an 'email'")
            continue
        email = normalise_email(item["email"])
        if len(email) > MAX_EMAIL or not is_valid_email(email):  # RFC 5321's path limit; the columns hold no more
            errors.append(f"item {index}: {item['email'][:100]!r} is not a valid e-mail address")
            continue
        if _has_nul(item):
            errors.append(f"item {index}: contains a NUL character")
            continue
        attributes = item.get("attributes")
        if attributes is not None and not isinstance(attributes, dict):
            errors.append(f"item {index}: 'attributes' must be an object")
            continue
        recipients.setdefault(
            email.lower(),
            Recipient(
                email=email,
                first_name=str(item.get("first_name") or "")[:100],
                last_name=str(item.get("last_name") or "")[:100],
                attributes=attributes,
            ),
        )
        if len(errors) >= 20:
            break
    if errors:
        raise TaskValidationError({"recipients": errors})
    return list(recipients.values())


def _has_nul(value: Any) -> bool:
    """True if a NUL character hides anywhere in a recipient (PostgreSQL text refuses it)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(map(_has_nul, value)) or any(map(_has_nul, value.values()))
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


_USER_PART = re.compile(EmailValidator.user_regex.pattern, EmailValidator.user_regex.flags)


@functools.lru_cache(maxsize=4096)
def _valid_domain(domain: str) -> bool:
    return domain in validate_email.domain_allowlist or validate_email.validate_domain_part(domain)


def is_valid_email(value: str) -> bool:
    """Django's validate_email, with the domain's check cached: a list of 100,000 addresses has few domains."""
    if not value or "@" not in value or len(value) > 320:
        return False
    user, domain = value.rsplit("@", 1)
    return bool(_USER_PART.match(user)) and _valid_domain(domain)


class JSONArrayLength(Func):
    """The length of a JSON list column, counted by the database (a tag's may hold 100,000 ids)."""

    function = "json_array_length"
    output_field = IntegerField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        return self.as_sql(compiler, connection, function="jsonb_array_length", **extra)


def _validate_content(*, name: str, subject: str, body_text: str, body_html: str, from_name: str) -> None:
    errors: dict[str, list[str]] = {}
    if not name.strip():
        errors["name"] = ["must not be empty"]
    elif len(name) > MAX_NAME:
        errors["name"] = [f"at most {MAX_NAME} characters"]
    for field, value in (
        ("name", name),
        ("subject", subject),
        ("body_text", body_text),
        ("body_html", body_html),
        ("from_name", from_name),
    ):
        if "\x00" in value:
            errors.setdefault(field, []).append("must not contain a NUL character")
    if len(from_name) > 100 or "\n" in from_name or "\r" in from_name:
        errors["from_name"] = ["must be one line of at most 100 characters"]
    if not subject.strip():
        errors["subject"] = ["must not be empty"]
    elif len(subject) > MAX_SUBJECT or "\n" in subject or "\r" in subject:
        errors["subject"] = [f"must be one line of at most {MAX_SUBJECT} characters"]
    if not body_text.strip() and not body_html.strip():
        errors["body"] = ["give a text body, an HTML body, or both"]
    for field, value in (("body_text", body_text), ("body_html", body_html)):
        if len(value) > MAX_BODY:
            errors[field] = [f"at most {MAX_BODY} characters"]
    for field, value, html in (
        ("subject", subject, False),
        ("body_text", body_text, False),
        ("body_html", body_html, True),
    ):
        if field in errors:
            continue
        try:
            compile_template(value, html=html, field=field)
        except TemplateError as exc:
            errors.setdefault(field, []).append(str(exc))
    if errors:
        raise TaskValidationError(errors)


def _validate_variables(*, owner_id: uuid.UUID, templates: dict[str, str], given: Iterable[str] = ()) -> None:
    """Every variable the templates read must be one the renderer provides (queues.templates_check)."""
    errors = template_variables_errors(owner_id=owner_id, templates=templates, attributes=given)
    if errors:
        raise TaskValidationError(errors)


def _validate_settings(*, priority: int, reply_to: str, scheduled_at: dt.datetime | None) -> None:
    errors: dict[str, list[str]] = {}
    if not isinstance(priority, int) or not -32768 <= priority <= 32767:
        errors["priority"] = ["must be between -32768 and 32767"]
    if reply_to:
        try:
            validate_email(reply_to)
        except ValidationError:
            errors["reply_to"] = [f"{reply_to[:100]!r} is not a valid e-mail address"]
    if scheduled_at is not None and (not isinstance(scheduled_at, dt.datetime) or timezone.is_naive(scheduled_at)):
        errors["scheduled_at"] = ["must be a date and time with a time zone"]
    if errors:
        raise TaskValidationError(errors)


def task_create(
    *,
    owner,
    name: str,
    subject: str,
    body_text: str = "",
    body_html: str = "",
    recipients: Sequence[Any] | None = None,
    tag: Tag | None = None,
    priority: int = 0,
    scheduled_at: dt.datetime | None = None,
    from_name: str = "",
    reply_to: str = "",
) -> Task:
    """Create a task for a recipient list or a tag's contacts; it is queued once expanded into subtasks.

    Everything is validated first: bad input raises and creates nothing. A
    task of up to INLINE_MAX recipients is expanded here and comes back
    pending; a larger one comes back preparing and is expanded in the
    background (queues.expansion), then becomes pending by itself.
    """
    if (recipients is None) == (tag is None):
        raise TaskValidationError({"recipients": ["give either a recipient list or a tag, not both or neither"]})
    _validate_content(name=name, subject=subject, body_text=body_text, body_html=body_html, from_name=from_name)
    _validate_settings(priority=priority, reply_to=reply_to, scheduled_at=scheduled_at)
    if tag is not None and tag.owner_id != owner.pk:
        raise TaskValidationError({"tag": ["no such tag"]})
    parsed = parse_recipients(recipients) if recipients is not None else None
    if parsed is not None and not parsed:
        raise TaskValidationError({"recipients": ["the list is empty"]})
    given = {name for r in parsed or () for name in (r.attributes or {})}
    templates = {"subject": subject, "body_text": body_text, "body_html": body_html}
    _validate_variables(owner_id=owner.pk, templates=templates, given=given)

    # For a tag, the ids it lists (read in SQL: the list may be long); the preparation
    # copies its members as they are then, and the total becomes their number.
    if parsed is not None:
        total = len(parsed)
    else:
        total = Tag.objects.filter(pk=tag.pk).values_list(JSONArrayLength("contacts"), flat=True)[0]
    if total == 0:
        raise TaskValidationError({"tag": ["the tag has no contacts"]})

    with transaction.atomic():
        task = Task.objects.create(
            owner=owner,
            name=name,
            subject=subject,
            body_text=body_text,
            body_html=body_html,
            priority=priority,
            scheduled_at=scheduled_at,
            from_name=from_name,
            reply_to=reply_to,
            tag=tag,
            status=Task.Status.PREPARING,
            recipients_total=total,
            recipients_staged=parsed is not None,  # a list is stored staged, in parts
        )
        if parsed is not None:
            recipients_stage(task=task, recipients=parsed)
        if total > INLINE_MAX:
            transaction.on_commit(lambda: preparation_enqueue(task.pk))
            return task
        task = task_prepare_all(task=task)
        if task.recipients_prepared == 0:  # a tag whose members are all gone
            raise TaskValidationError({"tag": ["the tag has no contacts"]})
    return task


def _locked_task(task_id: uuid.UUID) -> Task:
    return Task.objects.select_for_update().get(pk=task_id)


# What may change in which status. The mail's content only before sending
# starts, while paused, or once failed (to fix it, then retry): a sending task's
# recipients would get different mails. The schedule and the priority only
# matter while the task still has mail to send. The name is only a label.
CONTENT_FIELDS = ("subject", "body_text", "body_html", "from_name", "reply_to")
EDITABLE_IN = {
    "name": tuple(Task.Status),
    **dict.fromkeys(
        CONTENT_FIELDS, (Task.Status.PREPARING, Task.Status.PENDING, Task.Status.PAUSED, Task.Status.FAILED)
    ),
    "scheduled_at": (Task.Status.PREPARING, Task.Status.PENDING, Task.Status.SENDING, Task.Status.PAUSED),
    "priority": (Task.Status.PREPARING, Task.Status.PENDING, Task.Status.SENDING, Task.Status.PAUSED),
}


def task_update_check(*, task: Task, changes: dict[str, Any]) -> dict[str, Any]:
    """Validate an edit of ``task`` as it stands; returns the fields that really change.

    Raises TaskValidationError for bad values and TaskStateError (with the
    refused fields in ``errors``) for fields the task's status does not let change.
    """
    unknown = sorted(set(changes) - set(EDITABLE_IN))
    if unknown:
        raise TaskValidationError({field: ["cannot be changed"] for field in unknown})
    changed = {field: value for field, value in changes.items() if getattr(task, field) != value}
    refused = {field: [_not_editable(task.status, field)] for field in changed if task.status not in EDITABLE_IN[field]}
    if refused:
        raise TaskStateError(" ".join(msgs[0] for msgs in refused.values()), refused)
    merged = {field: changed.get(field, getattr(task, field)) for field in EDITABLE_IN}
    _validate_content(**{field: merged[field] for field in ("name", *CONTENT_FIELDS) if field != "reply_to"})
    _validate_settings(priority=merged["priority"], reply_to=merged["reply_to"], scheduled_at=merged["scheduled_at"])
    # Only the templates that change: a task written before this check stays editable otherwise.
    _validate_variables(owner_id=task.owner_id, templates={f: changed[f] for f in TEMPLATE_FIELDS if f in changed})
    return changed


def _not_editable(status: str, field: str) -> str:
    if field in CONTENT_FIELDS:
        hint = ": pause it first" if status == Task.Status.SENDING else ""
        return f"a {status} task's content cannot change{hint}"
    return f"a {status} task's {'schedule' if field == 'scheduled_at' else field} cannot change"


def task_update(*, task: Task, **changes: Any) -> Task:
    """Edit a task's content, schedule or priority; the change holds from the next claim on.

    Checked as task_create checks; validated again under the task's row lock,
    so a status change that raced the caller's check is still refused.
    """
    now = db_now()  # next_attempt_at and ready times are compared by claims
    with transaction.atomic():
        locked = _locked_task(task.pk)
        changed = task_update_check(task=locked, changes=changes)
        if not changed:
            return locked
        for field, value in changed.items():
            setattr(locked, field, value)
        locked.save(update_fields=[*changed, "updated_at"])
        if "priority" in changed:
            locked.subtasks.filter(status=SubTask.Status.PENDING).update(priority=locked.priority)
        if "scheduled_at" in changed:
            entry = max(now, locked.scheduled_at) if locked.scheduled_at else now
            # The first-send wait counts from when the task may start, as task_create records it.
            locked.wait_metrics.filter(status=TaskWaitMetric.Status.WAITING).update(queue_entry_time=entry)
            if locked.status in RUNNABLE:
                # ready_at only ever moves earlier here; a later schedule is found by the next claim.
                user_queue_activate(user_ids=[locked.owner_id], at=entry)
    return locked


def task_pause(*, task: Task) -> Task:
    """Stop new claims of the task at once; sends already under way finish."""
    with transaction.atomic():
        locked = _locked_task(task.pk)
        if locked.status == Task.Status.PAUSED:
            return locked
        if locked.status == Task.Status.PREPARING:
            raise TaskStateError(
                "a preparing task cannot be paused: it sends nothing until prepared; cancel it, or pause it then"
            )
        if locked.status not in RUNNABLE:
            raise TaskStateError(f"a {locked.status} task cannot be paused")
        locked.status = Task.Status.PAUSED
        locked.save(update_fields=["status", "updated_at"])
    return locked


def task_pause_by_platform(*, task_id: uuid.UUID, reason: str) -> bool:
    """Pause a running task on the platform's own decision (too many hard bounces), saying why.

    Returns False if the task was not running (already paused, finished,
    gone): a compare-and-set on its status, so a concurrent pause, cancel or
    completion wins. The reason shows in the API and the admin until the
    task is resumed.
    """
    paused = Task.objects.filter(pk=task_id, status__in=RUNNABLE).update(
        status=Task.Status.PAUSED, pause_reason=reason, updated_at=timezone.now()
    )
    if paused:
        logger.warning("task paused by the platform", extra={"task": str(task_id), "reason": reason})
    return bool(paused)


def task_resume(*, task: Task) -> Task:
    """Continue a paused task where it stopped: only its pending subtasks are sent."""
    with transaction.atomic():
        locked = _locked_task(task.pk)
        if locked.status in (*RUNNABLE, Task.Status.PREPARING):
            return locked  # not paused: it goes on (a preparing one is queued once prepared)
        if locked.status != Task.Status.PAUSED:
            raise TaskStateError(f"a {locked.status} task cannot be resumed")
        started = locked.subtasks.exclude(status=SubTask.Status.PENDING).exists()
        locked.status = Task.Status.SENDING if started else Task.Status.PENDING
        locked.pause_reason = ""
        locked.save(update_fields=["status", "pause_reason", "updated_at"])
        user_queue_activate(user_ids=[locked.owner_id], at=db_now())
    tasks_complete_if_done([locked.pk])
    locked.refresh_from_db()
    return locked


def task_cancel(*, task: Task) -> int:
    """Cancel the task and its pending subtasks; returns how many subtasks were cancelled.

    A preparing task stops preparing: the row lock waits for a chunk under
    way, and no preparer takes a cancelled task up again.
    """
    with transaction.atomic():
        locked = _locked_task(task.pk)
        if locked.status == Task.Status.CANCELLED:
            return 0
        if locked.status not in (*RUNNABLE, Task.Status.PAUSED, Task.Status.PREPARING):
            raise TaskStateError(f"a {locked.status} task cannot be cancelled")
        now = timezone.now()
        cancelled = locked.subtasks.filter(status=SubTask.Status.PENDING).update(
            status=SubTask.Status.CANCELLED, updated_at=now
        )
        TaskRecipientPart.objects.filter(task=locked).delete()
        locked.status = Task.Status.CANCELLED
        locked.completed_at = now
        locked.save(update_fields=["status", "completed_at", "updated_at"])
    return cancelled


def task_retry_failed(*, task: Task) -> int:
    """Queue the task's failed subtasks again (with a fresh retry budget); returns how many."""
    with transaction.atomic():
        locked = _locked_task(task.pk)
        if locked.status == Task.Status.CANCELLED:
            raise TaskStateError("a cancelled task cannot be retried")
        now = db_now()  # next_attempt_at and ready times are compared by claims
        retried = locked.subtasks.filter(status=SubTask.Status.FAILED).update(
            status=SubTask.Status.PENDING,
            attempts=0,
            next_attempt_at=now,
            service=None,
            sender_email=None,
            claim_token=None,
            updated_at=now,
        )
        if retried and locked.status in (Task.Status.COMPLETED, Task.Status.FAILED):
            locked.status = Task.Status.SENDING
            locked.completed_at = None
            locked.failure_reason = ""
            locked.save(update_fields=["status", "completed_at", "failure_reason", "updated_at"])
        if retried and locked.status in RUNNABLE:
            user_queue_activate(user_ids=[locked.owner_id], at=now)
    return retried


# The subtask outcomes that decide whether a finished task completed or failed.
COMPLETING = (SubTask.Status.SENT, SubTask.Status.FAILED, SubTask.Status.SUPPRESSED)


def _completes(outcomes: set[str]) -> bool:
    """Any mail sent, or nothing to deliver (recipients suppressed) and nothing failed."""
    return SubTask.Status.SENT in outcomes or (
        SubTask.Status.SUPPRESSED in outcomes and SubTask.Status.FAILED not in outcomes
    )


def tasks_complete_if_done(task_ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    """Finish runnable tasks whose every subtask is terminal: completed when a mail was sent, or when
    recipients were suppressed and none failed; failed otherwise.

    A few statements for the whole set (a batch of one-recipient tasks
    finishes as many tasks as it has mails), not a few per task.
    """
    ids = list(set(task_ids))
    if not ids:
        return []
    now = timezone.now()
    if connection.vendor == "postgresql":
        from queues.scheduler.pgsql import finish_tasks

        return finish_tasks(ids, now)
    unfinished = SubTask.objects.filter(task=OuterRef("pk"), status__in=NOT_TERMINAL)
    with transaction.atomic():
        # Locked and checked in one go: a concurrent pause, cancel or retry
        # (which lock the task first) wins, and a task is finished once.
        finished = list(
            Task.objects.filter(pk__in=ids, status__in=RUNNABLE)
            .filter(~Exists(unfinished))
            .order_by("pk")
            .select_for_update(of=("self",))
            .values_list("pk", flat=True)
        )
        if not finished:
            return []
        outcomes: dict[uuid.UUID, set[str]] = {t: set() for t in finished}
        for task_id, status in (
            SubTask.objects.filter(task_id__in=finished, status__in=COMPLETING)
            .values_list("task_id", "status")
            .distinct()
        ):
            outcomes[task_id].add(status)
        completed = {t for t, seen in outcomes.items() if _completes(seen)}
        for status, group in (
            (Task.Status.COMPLETED, [t for t in finished if t in completed]),
            (Task.Status.FAILED, [t for t in finished if t not in completed]),
        ):
            if group:
                Task.objects.filter(pk__in=group).update(status=status, completed_at=now, updated_at=now)
    return finished


def task_progress(task: Task) -> dict[str, int]:
    """Subtask counts by status (zeros included) and the total."""
    counts = dict.fromkeys(SubTask.Status.values, 0)
    for status, n in task.subtasks.values_list("status").annotate(n=Count("id")).order_by():
        counts[status] = n
    counts["total"] = sum(counts.values())
    return counts


def task_release_parked(*, task: Task, delivered: bool) -> int:
    """An operator's decision on the task's parked subtasks (outcome unknown after a crash).

    delivered=True: the mail is known to have arrived, mark it sent.
    delivered=False: send it again, with the same Message-ID.
    Returns how many subtasks were released.
    """
    now = db_now()  # next_attempt_at and ready times are compared by claims
    with transaction.atomic():
        locked = _locked_task(task.pk)
        parked = locked.subtasks.filter(status=SubTask.Status.PARKED)
        if delivered:
            released = parked.update(status=SubTask.Status.SENT, sent_at=now, updated_at=now)
        else:
            released = parked.update(
                status=SubTask.Status.PENDING,
                next_attempt_at=now,
                service=None,
                sender_email=None,
                updated_at=now,
            )
            if released and locked.status in RUNNABLE:
                user_queue_activate(user_ids=[locked.owner_id], at=now)
    tasks_complete_if_done([task.pk])
    return released


def service_set_enabled(*, service: EmailService, enabled: bool) -> bool:
    """Enable or disable a sending service; returns whether anything changed.

    A disabled service is never claimed again; sends already under way through
    it finish and are recorded. Enabling clears a failure back-off so that an
    operator who fixed the service sees it used at once.
    """
    fields: dict[str, Any] = {"is_enabled": enabled, "updated_at": timezone.now()}
    if enabled:
        fields |= {"backoff_level": 0, "backoff_until": None}
    with transaction.atomic():
        changed = bool(EmailService.objects.filter(pk=service.pk).exclude(is_enabled=enabled).update(**fields))
        if changed and enabled:
            notify_work()  # idle schedulers may have work waiting for a service
    return changed


def service_reset_quota(*, service: EmailService) -> None:
    """Start the service's current quota day again from zero (an operator's decision)."""
    with transaction.atomic():
        EmailService.objects.filter(pk=service.pk).update(used_quota=0, updated_at=timezone.now())
        notify_work()


def service_delete(*, service: EmailService) -> None:
    """Delete a service that holds no claimed mail and never sent (one with history is disabled instead)."""
    with transaction.atomic():
        # The claim locks ready services (SKIP LOCKED): holding the row, no new claim can use it.
        locked = EmailService.objects.select_for_update().filter(pk=service.pk).first()
        if locked is None:
            return
        claimed = SubTask.objects.filter(service=locked, status__in=SubTask.CLAIMED).count()
        if claimed:
            raise InFlightError(
                f"{_mails(claimed)} being sent through this service right now: "
                "disable it, and delete it once they are recorded"
            )
        try:
            locked.delete()
        except ProtectedError:
            raise TaskStateError("the service has sent mail and its history is kept: disable it instead") from None


def task_fail(*, task_id: uuid.UUID, reason: str) -> bool:
    """Fail a task that cannot be sent at all (its templates do not compile), with the reason.

    Its pending subtasks fail with the same reason and an alert is raised.
    Returns False if the task was already finished (another worker got there first).
    """
    now = timezone.now()
    with transaction.atomic():
        locked = Task.objects.select_for_update().filter(pk=task_id).first()
        if locked is None or locked.status not in (*RUNNABLE, Task.Status.PAUSED):
            return False
        locked.subtasks.filter(status=SubTask.Status.PENDING).update(
            status=SubTask.Status.FAILED, error_message=reason[:2000], updated_at=now
        )
        locked.status = Task.Status.FAILED
        locked.failure_reason = reason
        locked.completed_at = now
        locked.save(update_fields=["status", "failure_reason", "completed_at", "updated_at"])
    signals.task_failed.send(sender=Task, task_id=task_id, name=locked.name, owner_id=locked.owner_id, reason=reason)
    logger.warning("task failed", extra={"task": str(task_id), "reason": reason})
    return True


def _mails(count: int) -> str:
    return "1 mail is" if count == 1 else f"{count} mails are"


def _stop_claims(subtasks: QuerySet[SubTask], now: dt.datetime) -> None:
    """Cancel the pending subtasks, then refuse if any are claimed.

    Call inside a transaction that goes on to delete them: the update locks
    every pending row (a claim skips locked rows), and a row a claim locked
    first is seen claimed once that claim commits. Nothing can be claimed
    between this check and the delete.
    """
    subtasks.filter(status=SubTask.Status.PENDING).update(status=SubTask.Status.CANCELLED, updated_at=now)
    in_flight = subtasks.filter(status__in=SubTask.CLAIMED).count()
    if in_flight:
        raise InFlightError(
            f"{_mails(in_flight)} being sent right now: pause or cancel the work, "
            "and try again once they are recorded (within a minute or so); nothing was deleted"
        )


def task_delete(*, task: Task) -> None:
    """Cancel the task and delete it with its subtasks and their history; refused while mail is in flight."""
    with transaction.atomic():
        locked = Task.objects.select_for_update().filter(pk=task.pk).first()
        if locked is None:
            return
        _stop_claims(SubTask.objects.filter(task=locked), timezone.now())
        SendAttempt.objects.filter(subtask__task=locked).delete()
        locked.delete()
    logger.info("task deleted", extra={"task": str(task.pk)})


def user_erase(*, user) -> dict[str, int]:
    """Delete a user and everything of theirs; refused (nothing changed) while their mail is in flight.

    Returns how many rows of each kind were deleted.
    """
    user_id = user.pk  # delete() clears it
    with transaction.atomic():
        list(Task.objects.select_for_update().filter(owner=user).values_list("pk", flat=True))
        _stop_claims(SubTask.objects.filter(owner=user), timezone.now())
        counts = {
            "send attempts": SendAttempt.objects.filter(subtask__owner=user).delete()[0],
            "subtasks": SubTask.objects.filter(owner=user).delete()[0],
            "wait metrics": TaskWaitMetric.objects.filter(user=user).delete()[0],
            "tasks": Task.objects.filter(owner=user).delete()[0],
            # No preparation of theirs holds a contact: it would hold its task, locked above.
            "contacts": Contact.objects.filter(owner=user).delete()[0],
            "tags": Tag.objects.filter(owner=user).delete()[0],
        }
        UserQueue.objects.filter(user=user).delete()
        user.delete()
    logger.info("user erased", extra={"user": str(user_id), **{k.replace(" ", "_"): v for k, v in counts.items()}})
    return counts
