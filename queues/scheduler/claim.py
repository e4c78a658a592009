"""The claim: reserve service slots and the next subtasks, fairly, in one short transaction.

Order of work inside the transaction (every lock taken with SKIP LOCKED, so
concurrent claimers never wait on each other and never take the same row):

1. ready services, the plan's order (used_quota ascending; least recently
   used first among equals), locked;
2. slots: a rate-limited service's next start times, ``sending_rate``
   apart (queues.scheduler.slots), up to two seconds ahead; as many as quota
   allows for a service without a rate;
3. the next users in the rotation, locked, and each one's next subtasks:
   runnable tasks by priority then age, each task's due subtasks oldest first;
   those whose recipient is on a suppression list marked suppressed and set
   aside (queues.scheduler.suppressed), before any service is charged;
4. the other subtasks marked allocated with a claim token, worker id and time; quota
   counted; a rate-limited service's next free moment moved past its slots;
   served users moved to the back.

No SMTP happens here: the caller sends after commit and records afterwards.
After commit, tasks left with nothing but suppressed recipients are finished.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import logging
import math
import time
import uuid
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import DatabaseError, connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Greatest, Now
from django.utils import timezone

from common.dbclock import db_now
from config.services import get_config_by_category
from queues.models import EmailService, SubTask, Task, UserQueue
from queues.rotation import PG_TURN, next_turn, user_queue_activate, user_queue_defer
from queues.scheduler import pgsql
from queues.scheduler import slots as rate_slots
from queues.scheduler.suppressed import Pick, picks_drop_suppressed
from queues.services import tasks_complete_if_done

logger = logging.getLogger(__name__)

RUNNABLE = (Task.Status.PENDING, Task.Status.SENDING)
MAX_SERVICES_PER_CLAIM = 16
CLAIMED_STATUSES = (SubTask.Status.ALLOCATED, SubTask.Status.PROCESSING)


class ClaimStatus(enum.Enum):
    CLAIMED = "claimed"
    NO_SERVICE = "no_service"  # nothing can send now: all services busy, disabled or out of quota
    NO_WORK = "no_work"  # services are ready but no subtask is claimable
    # Try again at once: ready rows exist but other claimers hold them, or the
    # rotation just moved past users that turned out to have nothing to send.
    RETRY = "retry"
    # Only rate-limited services are ready and the caller has no sender free to
    # use their slots: claim again when a sender is free, not before.
    SENDERS_BUSY = "senders_busy"


@dataclass(frozen=True)
class ClaimedSubTask:
    id: uuid.UUID
    task_id: uuid.UUID
    owner_id: uuid.UUID
    service_id: uuid.UUID
    recipient_email: str
    message_id: str
    attempts: int
    contact: dict | None


@dataclass(frozen=True)
class ReadyService:
    """What a claim needs of a ready service; its transport settings are cached by ``version``."""

    id: uuid.UUID
    version: dt.datetime
    from_email: str
    daily_quota: int
    used_quota: int
    quota_date: dt.date | None
    sending_rate: float | None
    consecutive_failures: int
    next_available_at: dt.datetime | None


READY_COLUMNS = [f.name for f in dataclasses.fields(ReadyService)]


@dataclass
class Claim:
    status: ClaimStatus
    token: uuid.UUID | None = None
    started_at: dt.datetime | None = None
    # time.monotonic() just before and just after started_at was read from the database.
    clock_sample: tuple[float, float] | None = None
    items: list[ClaimedSubTask] = field(default_factory=list)
    services: dict[uuid.UUID, ReadyService] = field(default_factory=dict)
    # When each mail of a rate-limited service may start: {subtask id: slot (database time)}.
    slots: dict[uuid.UUID, dt.datetime] = field(default_factory=dict)
    # Picked, found on a suppression list and marked so: (subtask, task).
    suppressed: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)


def quota_day(now: dt.datetime, tz_name: str) -> dt.date:
    """The quota day ``now`` falls in: the calendar date in the quota time zone."""
    return now.astimezone(zoneinfo.ZoneInfo(tz_name)).date()


def ready_services_query(today: dt.date) -> Q:
    """The plan's ready condition, plus a failure back-off; a quota counted for an earlier day no longer counts.

    A rate-limited service is ready a claim's lead before its next free moment:
    its next slots then follow on from the last claim's without a gap.
    """
    return (
        Q(is_enabled=True)
        & (
            Q(next_available_at__isnull=True)
            | Q(next_available_at__lte=Now() + dt.timedelta(seconds=rate_slots.SLOT_LEAD_SECONDS))
        )
        & (Q(backoff_until__isnull=True) | Q(backoff_until__lte=Now()))
        & (Q(used_quota__lt=F("daily_quota")) | Q(quota_date__isnull=True) | Q(quota_date__lt=today))
        & Q(daily_quota__gt=0)
    )


def used_on(service: ReadyService | EmailService, today: dt.date) -> int:
    """What the service has used of ``today``'s quota (a count for a later day still counts: days never go back)."""
    return service.used_quota if service.quota_date is not None and service.quota_date >= today else 0


def claim_subtasks(*, worker_id: str, limit: int, queue_config: dict, max_leases: int | None = None) -> Claim:
    """Claim up to ``limit`` subtasks with their service slots; see the module docstring.

    ``max_leases`` caps the rate slots this claim takes (a worker passes its
    idle senders): a slot is the service's time, and taking more than the
    worker can start on time only wastes it.
    """
    # Every moment a claim writes or compares is the database's: hosts' clocks may differ.
    connection.ensure_connection()  # a connect inside the sample would blur the clock estimate
    before = time.monotonic()
    started_at = db_now()
    clock_sample = (before, time.monotonic())
    today = quota_day(started_at, queue_config["quota_timezone"])
    with transaction.atomic():
        # A service without a rate takes a whole batch; rate-limited ones take
        # one slot each. Locking more rows than that only blocks other claimers.
        services = _lock_ready_services(today, min(limit, MAX_SERVICES_PER_CLAIM), started_at)
        if not services:
            return Claim(
                _nothing_ready(EmailService.objects.filter(ready_services_query(today)), ClaimStatus.NO_SERVICE)
            )
        slots = _plan_slots(services, limit, today, queue_config["default_sending_rate"], max_leases)
        if not slots and max_leases == 0:
            return Claim(ClaimStatus.SENDERS_BUSY)
        picks, idle_users = _pick(sum(n for _, n in slots), started_at)
        _defer_idle_users(idle_users, started_at)
        picks, suppressed = picks_drop_suppressed(picks=picks, now=started_at)
        if picks:
            claim = _reserve(
                picks,
                slots,
                token=uuid.uuid4(),
                worker_id=worker_id,
                started_at=started_at,
                today=today,
                default_rate=queue_config["default_sending_rate"],
            )
        elif idle_users or suppressed:
            claim = Claim(ClaimStatus.RETRY)
        else:
            ready_users = UserQueue.objects.filter(ready_at__lte=started_at)
            return Claim(_nothing_ready(ready_users, ClaimStatus.NO_WORK))
    claim.clock_sample = clock_sample
    if suppressed:
        claim.suppressed = suppressed
        _finish_suppressed_tasks({task_id for _, task_id in suppressed})
    return claim


def _finish_suppressed_tasks(task_ids: set[uuid.UUID]) -> None:
    """Finish the tasks left with nothing to send; after the commit, so that of two claims suppressing a
    task's last recipients the later check sees both (as with a batch of outcomes).

    Bookkeeping: a failure here must not lose the claim just committed. The
    tasks are sending, so the stuck-task recovery finishes them later.
    """
    try:
        tasks_complete_if_done(task_ids)
    except DatabaseError:
        logger.warning("could not finish tasks after suppressing recipients", extra={"tasks": len(task_ids)})


def _lock_ready_services(today: dt.date, limit: int, now: dt.datetime) -> list[ReadyService]:
    if connection.vendor == "postgresql":
        rows = pgsql.ready_services(today=today, limit=limit, now=now)
    else:
        rows = (
            EmailService.objects.filter(ready_services_query(today))
            .order_by("used_quota", F("last_sent_at").asc(nulls_first=True), "id")
            .select_for_update(skip_locked=True)
            .values_list("id", "updated_at", *READY_COLUMNS[2:])[:limit]
        )
    return [ReadyService(*row) for row in rows]


def effective_rate(service: ReadyService | EmailService, default_rate: float) -> float:
    return service.sending_rate if service.sending_rate is not None else default_rate


def _nothing_ready(unlocked_rows, status: ClaimStatus) -> ClaimStatus:
    # SKIP LOCKED found nothing; if rows are ready but locked by another
    # claimer, the caller should retry at once rather than sleep.
    return ClaimStatus.RETRY if unlocked_rows.exists() else status


def _plan_slots(
    services: list[ReadyService], limit: int, today: dt.date, default_rate: float, max_leases: int | None = None
) -> list[tuple[ReadyService, int]]:
    """How many of the claim's mails go through each service, in the services' order.

    A rate-limited service takes its next slots, ``sending_rate`` apart. Mail
    for services without a rate is spread evenly over them (then topped up
    where quota is short): a whole batch on one service would wait for that
    service's connections while the others stand idle.
    """
    plan: dict[uuid.UUID, int] = {}
    left = limit
    leases_left = limit if max_leases is None else max_leases
    unlimited = []
    for service in services:
        quota_left = service.daily_quota - used_on(service, today)
        if quota_left <= 0 or left <= 0:
            continue
        rate = effective_rate(service, default_rate)
        if rate > 0:
            n = min(quota_left, left, leases_left, rate_slots.slots_per_claim(rate))
            if n <= 0:
                continue
            leases_left -= n
            plan[service.id] = n
            left -= n
        else:
            unlimited.append((service, quota_left))
    if unlimited and left > 0:
        share = math.ceil(left / len(unlimited))
        for service, quota_left in unlimited:
            n = min(quota_left, share, left)
            plan[service.id] = n
            left -= n
        for service, quota_left in unlimited:  # what a service short of quota could not take
            extra = min(quota_left - plan[service.id], left)
            plan[service.id] += extra
            left -= extra
    return [(service, plan[service.id]) for service in services if plan.get(service.id)]


def _pick(n: int, now: dt.datetime) -> tuple[list[Pick], list[uuid.UUID]]:
    """Up to n subtasks as (user, subtask, task, task status, recipient), rotation order; plus users without work."""
    rows = _pick_rows_postgres(n, now) if connection.vendor == "postgresql" else _pick_rows_portable(n, now)
    per_user: dict[uuid.UUID, list[tuple]] = defaultdict(list)
    order: list[uuid.UUID] = []
    for user_id, subtask_id, task_id, task_status, email in rows:
        if user_id not in per_user:
            order.append(user_id)
            per_user[user_id]
        if subtask_id is not None:
            per_user[user_id].append((user_id, subtask_id, task_id, task_status, email))
    idle = [user_id for user_id in order if not per_user[user_id]]
    # Round-robin: every user's first pick, then every user's second, ...
    picks = []
    for round_ in range(max((len(v) for v in per_user.values()), default=0)):
        for user_id in order:
            if round_ < len(per_user[user_id]):
                picks.append(per_user[user_id][round_])
    return picks[:n], idle


# One statement: the next users in rotation (locked, and moved to the back),
# and for each its next subtasks (locked): runnable, due tasks by priority
# then age, and within a task the due subtasks oldest first. Served by
# idx_user_queues_rotation, idx_tasks_owner_runnable and idx_subtasks_claim;
# no scan over all users or all pending rows.
_PICK_SQL = """
WITH u AS (
    SELECT user_id, turn FROM user_queues
    WHERE ready_at IS NOT NULL AND ready_at <= %(now)s
    ORDER BY turn, user_id
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
), bump AS (
    UPDATE user_queues q SET turn = {turn} FROM u WHERE q.user_id = u.user_id
), un AS (
    SELECT user_id, turn, ceil(%(n)s::numeric / count(*) OVER ())::int AS per_user FROM u
)
SELECT un.user_id, p.id, p.task_id, p.status, p.recipient_email
FROM un
LEFT JOIN LATERAL (
    SELECT s.id, s.task_id, t.status, s.recipient_email
    FROM (
        SELECT id, status, priority, created_at FROM tasks
        WHERE owner_id = un.user_id AND status IN ('pending', 'sending')
          AND (scheduled_at IS NULL OR scheduled_at <= %(now)s)
        ORDER BY priority DESC, created_at, id
    ) t
    CROSS JOIN LATERAL (
        SELECT id, task_id, recipient_email FROM subtasks
        WHERE task_id = t.id AND status = 'pending' AND next_attempt_at <= %(now)s
        ORDER BY next_attempt_at, id
        LIMIT un.per_user
        FOR UPDATE SKIP LOCKED
    ) s
    ORDER BY t.priority DESC, t.created_at, t.id
    LIMIT un.per_user
) p ON true
ORDER BY un.turn, un.user_id
""".replace("{turn}", PG_TURN)  # a constant expression: the database's clock


def _pick_rows_postgres(n: int, now: dt.datetime) -> list[tuple]:
    return pgsql._execute(_PICK_SQL, {"n": n, "now": now})


def _pick_rows_portable(n: int, now: dt.datetime) -> list[tuple]:
    """The same pick with the ORM, one user at a time (SQLite: the transaction holds the write lock)."""
    users = list(
        UserQueue.objects.filter(ready_at__isnull=False, ready_at__lte=now)
        .order_by("turn", "user_id")
        .select_for_update(skip_locked=True)
        .values_list("user_id", flat=True)[:n]
    )
    if not users:
        return []
    UserQueue.objects.filter(user_id__in=users).update(turn=next_turn())
    per_user = math.ceil(n / len(users))
    rows: list[tuple] = []
    for user_id in users:
        found = 0
        tasks = (
            Task.objects.filter(owner_id=user_id, status__in=RUNNABLE)
            .filter(Q(scheduled_at__isnull=True) | Q(scheduled_at__lte=now))
            .order_by("-priority", "created_at", "id")
            .values_list("id", "status")
        )
        for task_id, status in tasks:
            due = (
                SubTask.objects.filter(task_id=task_id, status=SubTask.Status.PENDING, next_attempt_at__lte=now)
                .order_by("next_attempt_at", "id")
                .select_for_update(skip_locked=True)
                .values_list("id", "recipient_email")[: per_user - found]
            )
            for subtask_id, email in due:
                rows.append((user_id, subtask_id, task_id, status, email))
                found += 1
            if found >= per_user:
                break
        if not found:
            rows.append((user_id, None, None, None, None))
    return rows


def _defer_idle_users(user_ids: list[uuid.UUID], now: dt.datetime) -> None:
    """Users the pick found without claimable work wait until their next work falls due (rows locked by the pick)."""
    if not user_ids:
        return
    if connection.vendor == "postgresql":
        # One statement for all: users that each had a few mails go idle by the thousand.
        pgsql.defer_users(user_ids, PG_TURN)
        return
    for user_id in user_ids:
        user_queue_defer(user_id=user_id, ready_at=_next_ready_at(user_id, now))


def _next_ready_at(user_id: uuid.UUID, now: dt.datetime) -> dt.datetime | None:
    """When the user may next have a claimable subtask: a retry falling due or a scheduled task starting."""
    candidates = []
    for task_id, scheduled_at in Task.objects.filter(owner_id=user_id, status__in=RUNNABLE).values_list(
        "id", "scheduled_at"
    ):
        first = (
            SubTask.objects.filter(task_id=task_id, status=SubTask.Status.PENDING)
            .order_by("next_attempt_at")
            .values_list("next_attempt_at", flat=True)
            .first()
        )
        if first is not None:
            candidates.append(max(first, scheduled_at) if scheduled_at else first)
    return min(candidates) if candidates else None


def _reserve(
    picks: list[tuple],
    slots: list[tuple[ReadyService, int]],
    *,
    token: uuid.UUID,
    worker_id: str,
    started_at: dt.datetime,
    today: dt.date,
    default_rate: float,
) -> Claim:
    claim = Claim(ClaimStatus.CLAIMED, token=token, started_at=started_at)
    assignment: list[tuple[uuid.UUID, uuid.UUID, str]] = []  # (subtask, service, sender)
    charges: list[tuple[uuid.UUID, int, dt.datetime | None]] = []  # (service, mails, next free moment)
    pick_iter = iter(picks)
    for service, n in slots:
        taken = [p for _, p in zip(range(n), pick_iter, strict=False)]
        if not taken:
            break
        assignment += [(p[1], service.id, service.from_email) for p in taken]
        next_free = None
        rate = effective_rate(service, default_rate)
        if rate > 0:
            soonest = started_at + dt.timedelta(seconds=rate_slots.SLOT_LEAD_SECONDS)
            first = max(soonest, service.next_available_at or soonest)
            starts, next_free = rate_slots.plan(first, rate, len(taken))
            claim.slots.update((p[1], at) for p, at in zip(taken, starts, strict=True))
        charges.append((service.id, len(taken), next_free))
        claim.services[service.id] = service
    starting = {p[2] for p in picks if p[3] == Task.Status.PENDING}
    if connection.vendor == "postgresql":
        rows = pgsql.reserve(assignment=assignment, token=token, worker_id=worker_id, now=started_at, starting=starting)
        pgsql.charge_services(charges=charges, today=today)
    else:
        rows = _reserve_portable(assignment, charges, token=token, worker_id=worker_id, now=started_at, today=today)
        if starting:
            Task.objects.filter(pk__in=starting, status=Task.Status.PENDING).update(
                status=Task.Status.SENDING, updated_at=started_at
            )
    items = {row[0]: _item(row) for row in rows}
    claim.items = [items[a[0]] for a in assignment if a[0] in items]
    return claim


def _item(row: tuple) -> ClaimedSubTask:
    (sid, task_id, owner_id, service_id, email, message_id, attempts, contact_id, c_email, first, last, attrs) = row
    contact = None
    if contact_id is not None:
        if isinstance(attrs, str):  # Django leaves jsonb undecoded on raw PostgreSQL cursors
            attrs = json.loads(attrs)
        contact = {"email": c_email, "first_name": first, "last_name": last, "attributes": attrs or {}}
    return ClaimedSubTask(
        id=sid,
        task_id=task_id,
        owner_id=owner_id,
        service_id=service_id,
        recipient_email=email,
        message_id=message_id,
        attempts=attempts,
        contact=contact,
    )


def _reserve_portable(
    assignment: list[tuple[uuid.UUID, uuid.UUID, str]],
    charges: list[tuple[uuid.UUID, int, dt.datetime | None]],
    *,
    token: uuid.UUID,
    worker_id: str,
    now: dt.datetime,
    today: dt.date,
) -> list[tuple]:
    by_service: dict[tuple[uuid.UUID, str], list[uuid.UUID]] = defaultdict(list)
    for subtask_id, service_id, sender in assignment:
        by_service[(service_id, sender)].append(subtask_id)
    for (service_id, sender), ids in by_service.items():
        SubTask.objects.filter(pk__in=ids).update(
            status=SubTask.Status.ALLOCATED,
            service_id=service_id,
            sender_email=sender,
            claim_token=token,
            claimed_by=worker_id,
            claimed_at=now,
            updated_at=now,
        )
    for service_id, n, lease in charges:
        changes = {
            "used_quota": Case(When(quota_date__gte=today, then=F("used_quota") + n), default=Value(n)),
            # A quota day never goes back (a later day stays the one counted).
            "quota_date": Case(When(quota_date__gt=today, then=F("quota_date")), default=Value(today)),
        }
        if lease is not None:
            changes["next_available_at"] = lease
        EmailService.objects.filter(pk=service_id).update(**changes)
    return list(
        SubTask.objects.filter(pk__in=[a[0] for a in assignment]).values_list(
            "id",
            "task_id",
            "owner_id",
            "service_id",
            "recipient_email",
            "message_id",
            "attempts",
            "contact_id",
            "contact__email",
            "contact__first_name",
            "contact__last_name",
            "contact__attributes",
        )
    )


def claims_start(*, token: uuid.UUID, ids: list[uuid.UUID], unlimited: set[uuid.UUID] | None = None) -> set[uuid.UUID]:
    """allocated -> processing just before SMTP, only while the task and the service still allow it.

    Returns the ids that may be sent. The rest must be released: their task
    was paused or cancelled since the claim, recovery took them back, their
    service was disabled, or the service had no sending rate at claim time
    (``unlimited``: claimed in bulk, unspaced) and has one now.
    """
    unlimited = unlimited or set()
    default_rate = get_config_by_category("queue")["default_sending_rate"]
    if connection.vendor == "postgresql":
        return pgsql.start(ids=ids, token=token, unlimited=unlimited, default_rate=default_rate)
    now = timezone.now()
    services = EmailService.objects.filter(is_enabled=True)
    rated_now = [
        pk
        for pk, rate in services.filter(pk__in=unlimited).values_list("pk", "sending_rate")
        if (rate if rate is not None else default_rate) > 0
    ]
    SubTask.objects.filter(
        pk__in=ids, claim_token=token, status=SubTask.Status.ALLOCATED, task__status__in=RUNNABLE
    ).filter(service__in=services).exclude(service__in=rated_now).update(
        status=SubTask.Status.PROCESSING, updated_at=now
    )
    return set(
        SubTask.objects.filter(pk__in=ids, claim_token=token, status=SubTask.Status.PROCESSING).values_list(
            "pk", flat=True
        )
    )


def claims_release(*, token: uuid.UUID, ids: list[uuid.UUID], quota_timezone: str) -> int:
    """Give back claimed subtasks that were never sent: pending again, quota refunded.

    The quota goes back to the day it was charged (the claim's day), and only
    while that is still the service's quota day: a release after midnight
    takes nothing from the new day's count. A rate slot given back stays
    unused (a later slot may already have started: moving the service's next
    free moment back could start a send too close to it).
    """
    now = db_now()  # the owners are ready again from now: a moment other processes compare
    with transaction.atomic():
        held = list(
            SubTask.objects.filter(pk__in=ids, claim_token=token, status__in=CLAIMED_STATUSES)
            .select_for_update()
            .values_list("pk", "service_id", "owner_id", "claimed_at")
        )
        if not held:
            return 0
        SubTask.objects.filter(pk__in=[h[0] for h in held]).update(
            status=SubTask.Status.PENDING,
            service=None,
            sender_email=None,
            claim_token=None,
            claimed_by="",
            updated_at=now,
        )
        refunds: dict[tuple[uuid.UUID, dt.date], int] = defaultdict(int)
        for _, service_id, _, claimed_at in held:
            refunds[(service_id, quota_day(claimed_at or now, quota_timezone))] += 1
        for (service_id, day), count in sorted(refunds.items()):
            EmailService.objects.filter(pk=service_id, quota_date=day).update(
                used_quota=Greatest(F("used_quota") - count, Value(0))
            )
        # A task cancelled meanwhile keeps nothing pending.
        SubTask.objects.filter(pk__in=[h[0] for h in held], task__status=Task.Status.CANCELLED).update(
            status=SubTask.Status.CANCELLED
        )
        user_queue_activate(user_ids={h[2] for h in held}, at=now)
    return len(held)
