"""FailureRecoveryService: claims that will never report back go back to the queue.

Rules, thresholds from the ``recovery`` settings:

- ``dead_worker``: a subtask claimed by a worker whose heartbeat is older than
  ``worker_dead_seconds`` (or that stopped, or has no heartbeat at all) is
  recovered at once;
- ``timeout``: a subtask claimed and not updated for ``subtask_timeout_minutes``
  is recovered (the plan's rule: error "Reset due to timeout"), but never
  before its send can have ended (``SEND_TIMEOUTS`` x the service's timeout
  plus ``SEND_MARGIN_SECONDS``): a live send is not overlapped by its retry;
- ``stuck_task``: a task in ``sending`` not updated for ``stuck_task_minutes``
  is re-queued (its owner back in the rotation, finished if all is done).

A subtask still ``allocated`` never started its SMTP conversation: it goes back
to ``pending`` as it was, and its quota charge is refunded (to the quota day it
was charged to, if that is still the service's day). One in ``processing`` may
have been delivered: by default it is retried with the same Message-ID (an
attempt counted, failed after ``queue.max_retries``), not before its old send
can have ended; or with ``unknown_outcome = "park"`` it waits in ``parked`` for
an operator. A subtask whose task was cancelled meanwhile ends ``cancelled``.
A rate-limited service's slots are not given back: they are at most two seconds
ahead (queues.scheduler.slots), and a later slot may have started already.

Every moment compared here is the database's (``common.dbclock``): a host whose
clock is off neither declares live workers dead nor misses dead ones.

Recovery reads candidates (id and the claim token it saw), then resets each
with a compare-and-set on that token: a subtask whose outcome was recorded in
between is never reverted.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.functions import Greatest

from common.dbclock import db_now
from config.services import get_config_by_category
from queues.models import EmailService, SubTask, Task, WorkerHeartbeat
from queues.rotation import user_queue_activate
from queues.scheduler.claim import quota_day
from queues.scheduler.outcomes import retry_delay
from queues.scheduler.transports import SEND_TIMEOUTS
from queues.services import tasks_complete_if_done

logger = logging.getLogger(__name__)

RULES = ("dead_worker", "timeout", "stuck_task")
TIMEOUT_ERROR = "Reset due to timeout"
# Beyond its SEND_TIMEOUTS socket timeouts, what a send may still need: the
# wait between being marked processing and a sender taking it up, recording.
SEND_MARGIN_SECONDS = 60.0


@dataclass(frozen=True)
class Candidate:
    id: uuid.UUID
    token: uuid.UUID | None
    status: str
    attempts: int
    owner_id: uuid.UUID
    task_id: uuid.UUID
    claimed_by: str
    service_id: uuid.UUID | None
    claimed_at: dt.datetime | None
    updated_at: dt.datetime
    service_timeout: float
    service_rate: float | None
    rule: str

    @property
    def send_ends(self) -> dt.datetime:
        """When a send started under this claim has ended, whatever happened to its worker."""
        return self.updated_at + dt.timedelta(seconds=SEND_TIMEOUTS * self.service_timeout)


@dataclass
class RecoveryReport:
    dry_run: bool
    counts: Counter = field(default_factory=Counter)  # "<rule>.<action>" -> number
    tasks: list[uuid.UUID] = field(default_factory=list)

    @property
    def recovered(self) -> int:
        return sum(n for key, n in self.counts.items() if not key.startswith("stuck_task"))

    def lines(self) -> list[str]:
        verb = "would" if self.dry_run else "did"
        if not self.counts:
            return [f"recovery: nothing to do ({'dry run' if self.dry_run else 'applied'})"]
        return [f"recovery {verb}: {key} {n}" for key, n in sorted(self.counts.items())]


class FailureRecoveryService:
    def __init__(self, *, now: dt.datetime | None = None) -> None:
        self.now = now or db_now()
        self.config = get_config_by_category("recovery")
        self.queue_config = get_config_by_category("queue")

    # --- reading ---------------------------------------------------------------

    def find_candidates(self, rules: tuple[str, ...] = RULES) -> list[Candidate]:
        """Claimed subtasks that the rules give up on, with the claim token seen now."""
        found: dict[uuid.UUID, Candidate] = {}
        claimed = SubTask.objects.filter(status__in=SubTask.CLAIMED)
        if "dead_worker" in rules and self._heartbeats_are_meaningful():
            for row in claimed.filter(self._dead_worker_condition()).values_list(*CANDIDATE_FIELDS):
                found.setdefault(row[0], Candidate(*row, rule="dead_worker"))
        if "timeout" in rules:
            horizon = self.now - dt.timedelta(minutes=self.config["subtask_timeout_minutes"])
            for row in claimed.filter(updated_at__lt=horizon).values_list(*CANDIDATE_FIELDS):
                candidate = Candidate(*row, rule="timeout")
                # A long service timeout outlasts the rule: wait until the send has surely ended.
                if candidate.send_ends + dt.timedelta(seconds=SEND_MARGIN_SECONDS) < self.now:
                    found.setdefault(row[0], candidate)
        return list(found.values())

    def stuck_tasks(self) -> list[uuid.UUID]:
        horizon = self.now - dt.timedelta(minutes=self.config["stuck_task_minutes"])
        return list(
            Task.objects.filter(status=Task.Status.SENDING, updated_at__lt=horizon).values_list("pk", flat=True)
        )

    def _dead_worker_condition(self) -> Q:
        horizon = self.now - dt.timedelta(seconds=self.config["worker_dead_seconds"])
        dead = WorkerHeartbeat.objects.filter(Q(last_seen_at__lt=horizon) | Q(stopped_at__isnull=False))
        any_heartbeat = WorkerHeartbeat.objects.filter(worker_id=OuterRef("claimed_by"))
        return Q(claimed_by__in=dead.values("worker_id")) | (Q(claimed_at__lt=horizon) & ~Exists(any_heartbeat))

    def _heartbeats_are_meaningful(self) -> bool:
        """False just after a database restart: nobody could write a heartbeat while it was down."""
        if connection.vendor != "postgresql":
            return True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_postmaster_start_time()")
            started = cursor.fetchone()[0]
        grace = dt.timedelta(seconds=2 * self.config["worker_dead_seconds"])
        return self.now - started > grace

    # --- writing ---------------------------------------------------------------

    def apply(self, candidates: list[Candidate], report: RecoveryReport) -> None:
        """Reset each candidate if, and only if, it still holds the claim token seen."""
        activate: dict[uuid.UUID, dt.datetime] = {}
        reset: list[uuid.UUID] = []
        services = _ServiceChanges()
        for candidate in candidates:
            action, when = self._reset(candidate)
            if action is None:
                report.counts[f"{candidate.rule}.already_done"] += 1
                continue
            reset.append(candidate.id)
            services.add(candidate, self.now, self.queue_config)
            report.counts[f"{candidate.rule}.{action}"] += 1
            if when is not None:
                activate[candidate.owner_id] = min(when, activate.get(candidate.owner_id, when))
            logger.info(
                "subtask recovered",
                extra={
                    "subtask": str(candidate.id),
                    "rule": candidate.rule,
                    "action": action,
                    "worker": candidate.claimed_by,
                },
            )
        # A task cancelled while its mails were claimed keeps nothing waiting.
        SubTask.objects.filter(
            pk__in=reset,
            status__in=(SubTask.Status.PENDING, SubTask.Status.PARKED),
            task__status=Task.Status.CANCELLED,
        ).update(status=SubTask.Status.CANCELLED, updated_at=self.now)
        services.apply()
        for owner_id, when in activate.items():
            user_queue_activate(user_ids=[owner_id], at=when)

    def _reset(self, c: Candidate) -> tuple[str | None, dt.datetime | None]:
        held = SubTask.objects.filter(pk=c.id, claim_token=c.token, status=c.status)
        error = TIMEOUT_ERROR if c.rule == "timeout" else f"Reset: worker {c.claimed_by} stopped responding"
        back = {"service": None, "sender_email": None, "claim_token": None, "claimed_by": "", "updated_at": self.now}
        if c.status == SubTask.Status.ALLOCATED:
            # Never started: back as it was, no attempt spent.
            updated = held.update(status=SubTask.Status.PENDING, error_message=error, next_attempt_at=self.now, **back)
            return ("requeued", self.now) if updated else (None, None)
        if self.config["unknown_outcome"] == "park":
            updated = held.update(
                status=SubTask.Status.PARKED,
                error_message=f"{error}; the SMTP conversation had started, outcome unknown",
                claim_token=None,
                updated_at=self.now,
            )
            return ("parked", None) if updated else (None, None)
        attempts = c.attempts + 1
        if attempts > self.queue_config["max_retries"]:
            updated = held.update(
                status=SubTask.Status.FAILED,
                attempts=attempts,
                error_message=f"{error}; outcome unknown after {attempts} attempts",
                claim_token=None,
                updated_at=self.now,
            )
            return ("failed", None) if updated else (None, None)
        # Possibly delivered: retried with the same Message-ID, as an attempt.
        when = self._unknown_outcome_retry_at(c, attempts)
        updated = held.update(
            status=SubTask.Status.PENDING,
            attempts=attempts,
            error_message=f"{error}; outcome unknown, retried with the same Message-ID",
            next_attempt_at=when,
            **back,
        )
        return ("retried", when) if updated else (None, None)

    def _unknown_outcome_retry_at(self, c: Candidate, attempts: int) -> dt.datetime:
        """Never before the old send can have ended, so two sends of one mail never overlap.

        A dead worker's send is simply over then: waiting the transient retry
        back-off on top would only delay the queue. A live worker's claim that
        timed out is a failing attempt like any other: the back-off applies too.
        """
        if c.rule == "dead_worker":
            return max(self.now, c.send_ends)
        return max(self.now + dt.timedelta(seconds=retry_delay(attempts, self.queue_config)), c.send_ends)

    def requeue_stuck_tasks(self, task_ids: list[uuid.UUID], report: RecoveryReport) -> None:
        finished = set(tasks_complete_if_done(task_ids))
        report.counts["stuck_task.completed"] += len(finished)
        rest = [t for t in task_ids if t not in finished]
        owners = set(Task.objects.filter(pk__in=rest).values_list("owner_id", flat=True))
        Task.objects.filter(pk__in=rest, status=Task.Status.SENDING).update(updated_at=self.now)
        user_queue_activate(user_ids=owners, at=self.now)
        report.counts["stuck_task.requeued"] += len(rest)
        for key in ("stuck_task.completed", "stuck_task.requeued"):
            if not report.counts[key]:
                del report.counts[key]

    # --- the whole pass ------------------------------------------------------------

    def run(self, *, rules: tuple[str, ...] = RULES, dry_run: bool = False) -> RecoveryReport:
        report = RecoveryReport(dry_run=dry_run)
        candidates = self.find_candidates(rules)
        stuck = self.stuck_tasks() if "stuck_task" in rules else []
        report.tasks = stuck
        if dry_run:
            for candidate in candidates:
                report.counts[f"{candidate.rule}.{self._planned_action(candidate)}"] += 1
            if stuck:
                report.counts["stuck_task.requeued"] += len(stuck)
            return report
        with transaction.atomic():
            self.apply(candidates, report)
        if stuck:
            with transaction.atomic():
                self.requeue_stuck_tasks(stuck, report)
        if report.counts:
            for line in report.lines():
                logger.info(line)
        return report

    def _planned_action(self, c: Candidate) -> str:
        if c.status == SubTask.Status.ALLOCATED:
            return "requeued"
        if self.config["unknown_outcome"] == "park":
            return "parked"
        return "failed" if c.attempts + 1 > self.queue_config["max_retries"] else "retried"


CANDIDATE_FIELDS = (
    "id",
    "claim_token",
    "status",
    "attempts",
    "owner_id",
    "task_id",
    "claimed_by",
    "service_id",
    "claimed_at",
    "updated_at",
    "service__timeout",
    "service__sending_rate",
)


class _ServiceChanges:
    """What recovered claims give back to their services: quota never used.

    Applied after the subtasks, in service id order (as the recorder locks
    them), so recovery and a recorder never wait on each other in a cycle.
    """

    def __init__(self) -> None:
        self.refunds: dict[tuple[uuid.UUID, dt.date], int] = {}

    def add(self, c: Candidate, now: dt.datetime, queue_config: dict) -> None:
        if c.service_id is None or c.claimed_at is None:
            return
        started = c.status == SubTask.Status.PROCESSING
        if not started:
            # Never sent: the charge goes back to the day it was made.
            day = quota_day(c.claimed_at, queue_config["quota_timezone"])
            self.refunds[(c.service_id, day)] = self.refunds.get((c.service_id, day), 0) + 1

    def apply(self) -> None:
        for service_id in sorted({s for s, _ in self.refunds}):
            for (refund_id, day), count in self.refunds.items():
                if refund_id == service_id:
                    EmailService.objects.filter(pk=service_id, quota_date=day).update(
                        used_quota=Greatest(F("used_quota") - count, Value(0))
                    )
