"""Recording what happened to claimed subtasks, in batches.

Every write is a compare-and-set on the claim token: an outcome arriving for
a subtask that recovery has meanwhile handed to someone else changes nothing
(the attempt is still logged). Counters are computed in the UPDATE itself,
so concurrent workers never lose each other's updates.

Each outcome carries an attempt id, fixed when its send finished. Its attempt
row is written first and at most once: an outcome whose row already exists
was applied by an earlier, committed write (whose acknowledgement was lost),
and changes nothing again, counters included.

Hard bounces (deliverability.bounces) suppress their address for the task's
owner, in the same transaction as the failure they come with, one statement
per batch; every answer is counted for the bounce and complaint rates
(deliverability.reputation). After the batch, a task whose hard-bounce rate
passes its limit is paused, with an alert.

No outcome can wedge the recorder: a batch the database refuses for its data
(a foreign key, a bad value) is split until each refused outcome stands alone;
that one is set aside (logged, alerted, its subtask parked with the reason)
and the rest is recorded. Connection errors still fail the whole batch: the
caller retries it, and nothing is applied twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Case, DateTimeField, DecimalField, F, IntegerField, Q, Value, When
from django.db.models.functions import Cast, Coalesce, Greatest, Least, Now, Round
from django.utils import timezone

from common.dbclock import db_now
from common.ids import uuid7
from deliverability.bounces import Bounce
from deliverability.models import Suppression
from deliverability.reputation import (
    Answer,
    TaskTally,
    reputation_config,
    reputation_count,
    tallies_over_limit,
    task_bounce_alert,
    task_guard_reason,
    task_tally_check,
)
from deliverability.suppressions import SuppressionEntry, suppressions_add_many
from queues import signals
from queues.first_send_wait import TaskWaitMonitorService
from queues.models import EmailService, SendAttempt, SubTask, Task
from queues.rotation import user_queue_activate
from queues.scheduler import pgsql
from queues.scheduler.claim import ClaimedSubTask
from queues.scheduler.transports import PERMANENT, SENT, TRANSIENT, Delivery
from queues.services import task_pause_by_platform, tasks_complete_if_done

logger = logging.getLogger(__name__)

CLAIMED = (SubTask.Status.ALLOCATED, SubTask.Status.PROCESSING)
# Weight an older value keeps per new send in the service's moving success
# rate and response time (about the last 50 sends count).
EWMA_KEEP = Decimal("0.98")
FIRST_USE = Q(total_sent=0, total_failed=0)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
UNKNOWN_OUTCOME_TIMEOUTS = 3
TEXT_LIMIT = 2000
# The database is unreachable: nothing about the batch itself is wrong.
CONNECTION_ERRORS = (OperationalError, InterfaceError)
# What a batch's own data can make the database (or the driver) refuse.
DATA_ERRORS = (DatabaseError, ValueError)


def storable(text: str, limit: int = TEXT_LIMIT) -> str:
    """Text as the database can store it: PostgreSQL text refuses NUL, UTF-8 refuses lone surrogates."""
    text = text.replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")[:limit]


def reply_text(delivery: Delivery) -> str:
    """The server's code and reply as kept on the subtask (and as a hard bounce's evidence)."""
    return storable(f"{delivery.code} {delivery.reply}" if delivery.code else delivery.reply)


@dataclass(frozen=True)
class SendResult:
    item: ClaimedSubTask
    token: uuid.UUID
    delivery: Delivery
    started_at: dt.datetime
    finished_at: dt.datetime
    rate: float  # the service's effective sending_rate at claim time
    service_failures: int = 0  # the service's consecutive_failures at claim time
    timeout: float = 10.0  # the service's SMTP timeout
    # Fixed when the send finished: however often the outcome is written, one attempt row, applied once.
    attempt_id: uuid.UUID = field(default_factory=uuid7)

    @property
    def response_ms(self) -> int:
        return max(0, int((self.finished_at - self.started_at).total_seconds() * 1000))


@dataclass
class RecordSummary:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    stale: int = 0  # outcomes for subtasks no longer held by their claim
    repeated: int = 0  # outcomes an earlier write already applied
    set_aside: int = 0  # outcomes the database refused (their subtasks parked)
    applied: list[SendResult] = field(default_factory=list)
    # (service id, name, consecutive failures, failures before the batch, any success)
    services: list[tuple[uuid.UUID, str, int, int, bool]] = field(default_factory=list)
    completed_tasks: list[uuid.UUID] = field(default_factory=list)
    first_sends: dict[uuid.UUID, int] = field(default_factory=dict)
    # The bounce tallies of the batch's tasks as this write left them.
    tallies: dict[uuid.UUID, TaskTally] = field(default_factory=dict)
    paused_tasks: list[uuid.UUID] = field(default_factory=list)

    def add(self, other: RecordSummary) -> None:
        """Fold in the summary of another part of the same batch."""
        for name in ("sent", "retried", "failed", "stale", "repeated", "set_aside"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.applied += other.applied
        self.services += other.services
        self.tallies.update(other.tallies)  # written later: the newer figures


def retry_delay(attempts: int, queue_config: dict) -> float:
    """Seconds before retry number ``attempts`` (1 = the first retry): exponential, capped."""
    base = queue_config["retry_backoff_seconds"]
    return min(base * 2 ** max(0, attempts - 1), queue_config["retry_backoff_max_seconds"])


@dataclass(frozen=True)
class ServiceBatch:
    """What one batch of results means for one service's counters."""

    id: uuid.UUID
    ok: int
    failed: int
    faults: int  # failures that are the service's fault
    trailing: int  # service faults after the last success
    last_ok: dt.datetime | None
    mean_ms: Decimal
    # Some results were claimed without a sending rate (in bulk, unspaced); rate
    # slots space the others at claim time already.
    unspaced: bool
    failures_before: int

    @classmethod
    def of(cls, service_id: uuid.UUID, results: list[SendResult]) -> ServiceBatch:
        results = sorted(results, key=lambda r: r.finished_at)
        ok = [r for r in results if r.delivery.outcome == SENT]
        last_ok = ok[-1].finished_at if ok else None
        return cls(
            id=service_id,
            ok=len(ok),
            failed=len(results) - len(ok),
            faults=sum(r.delivery.service_fault for r in results),
            trailing=sum(r.delivery.service_fault for r in results if last_ok is None or r.finished_at > last_ok),
            last_ok=last_ok,
            mean_ms=Decimal(sum(r.response_ms for r in results) / len(results)).quantize(Decimal("0.01")),
            unspaced=any(not r.rate for r in results),
            failures_before=max(r.service_failures for r in results),
        )

    @property
    def batch_rate(self) -> Decimal:
        return Decimal(100 * self.ok / (self.ok + self.failed)).quantize(Decimal("0.0001"))

    @property
    def keep(self) -> Decimal:
        return (EWMA_KEEP ** (self.ok + self.failed)).quantize(Decimal("0.000001"))


class OutcomeRecorder:
    """Records batches of results; remembers across batches what needs doing only once."""

    def __init__(self, *, worker_id: str) -> None:
        self.worker_id = worker_id
        self._first_send_seen: set[uuid.UUID] = set()
        self._task_touched: dict[uuid.UUID, dt.datetime] = {}

    def record(self, results: list[SendResult], *, queue_config: dict) -> RecordSummary:
        """Write the outcomes: attempt log, subtasks and service counters, in as few transactions as the data allows.

        Then call ``finish`` with the summary. The two are separate so that a
        caller retrying after a database error never writes a batch twice.
        Raises only connection errors (retry the same results: nothing is
        applied twice); outcomes the database refuses are set aside.
        """
        summary = RecordSummary()
        if results:
            self._record_or_split(results, queue_config, summary)
        return summary

    def _record_or_split(self, results: list[SendResult], queue_config: dict, summary: RecordSummary) -> None:
        try:
            summary.add(self._write(results, queue_config))
        except CONNECTION_ERRORS:
            raise
        except DATA_ERRORS as exc:
            if len(results) == 1:
                self._set_aside(results[0], exc, summary)
                return
            # Halves, each in its own transaction: log2(batch) rounds find each refused outcome.
            middle = len(results) // 2
            self._record_or_split(results[:middle], queue_config, summary)
            self._record_or_split(results[middle:], queue_config, summary)

    def _write(self, results: list[SendResult], queue_config: dict) -> RecordSummary:
        summary = RecordSummary()
        now = db_now()  # retry times are compared with other processes' claims
        with transaction.atomic():
            fresh_ids = self._log_attempts(results)
            fresh = [r for r in results if r.attempt_id in fresh_ids]
            summary.repeated = len(results) - len(fresh)
            if fresh:
                summary.applied = self._record_subtasks(fresh, queue_config, now, summary)
                summary.tallies = self._record_bounces(summary.applied, now)
                # Last, so the service rows stay locked only until the commit just after.
                summary.services = self._update_services(fresh, queue_config["default_sending_rate"])
        if summary.repeated:
            logger.info("outcomes already recorded, skipped", extra={"count": summary.repeated})
        return summary

    @staticmethod
    def _set_aside(result: SendResult, exc: Exception, summary: RecordSummary) -> None:
        """An outcome the database refuses: park its subtask with the reason, alert, and go on."""
        delivery = result.delivery
        what = storable(" ".join(str(p) for p in (delivery.outcome, delivery.code, delivery.reply) if p), 200)
        error = storable(f"{type(exc).__name__}: {exc}".strip(), 1000)
        reason = storable(f"Outcome could not be recorded ({what}): {error}")
        summary.stale += 1
        summary.set_aside += 1
        logger.error(
            "outcome could not be recorded: set aside",
            extra={"subtask": str(result.item.id), "outcome": delivery.outcome, "error": error},
        )
        try:
            SubTask.objects.filter(pk=result.item.id, claim_token=result.token, status__in=CLAIMED).update(
                status=SubTask.Status.PARKED, error_message=reason, claim_token=None, updated_at=Now()
            )
            signals.outcome_unrecordable.send(
                sender=SubTask, subtask_id=result.item.id, task_id=result.item.task_id, reason=reason, error=error
            )
        except CONNECTION_ERRORS:
            raise
        except DATA_ERRORS:
            # Parking is the courtesy; going on is the point. Recovery still sees the claim.
            logger.exception(
                "could not park a subtask whose outcome was refused", extra={"subtask": str(result.item.id)}
            )

    def finish(self, summary: RecordSummary, *, queue_config: dict) -> None:
        """What follows a recorded batch: service back-off and alerts, first sends, finished tasks, bounce guard.

        One transaction: one commit for all of it, not one per statement (a
        batch of one-recipient tasks has as much of it to do as it has mails).
        Every step is a compare-and-set, so a retry after a lost commit is harmless.
        The bounce guard has a transaction of its own, after: it holds no
        service row while it locks tasks and tallies (which the next batch's
        write locks before the services).
        """
        with transaction.atomic():
            for service_id, name, consecutive, before, any_ok in summary.services:
                if any_ok and before:
                    signals.service_recovered.send(sender=EmailService, service_id=service_id)
                elif not any_ok:
                    self._maybe_back_off(service_id, name, consecutive, queue_config)
            self._after_commit(summary.applied, timezone.now(), summary)
        if summary.tallies:
            with transaction.atomic():
                summary.paused_tasks = self._guard_tasks(summary.tallies)

    # --- bounces --------------------------------------------------------------

    @staticmethod
    def _record_bounces(applied: list[SendResult], now: dt.datetime) -> dict[uuid.UUID, TaskTally]:
        """Suppress the hard-bounced addresses for their owners; count every answer for the rates.

        Only outcomes applied to their subtask: their rows are locked by this
        transaction, so their task, owner and service cannot vanish before the commit.
        """
        hard = [r for r in applied if r.delivery.bounce == Bounce.HARD]
        suppressions_add_many(
            entries=[
                SuppressionEntry(
                    owner_id=r.item.owner_id,
                    email=r.item.recipient_email,
                    reason=Suppression.Reason.HARD_BOUNCE,
                    source="smtp",
                    task_id=r.item.task_id,
                    subtask_id=r.item.id,
                    service_id=r.item.service_id,
                    detail=reply_text(r.delivery),
                )
                for r in hard
            ]
        )
        answers = [
            Answer(
                task_id=r.item.task_id,
                owner_id=r.item.owner_id,
                service_id=r.item.service_id,
                sent=r.delivery.outcome == SENT,
                final=r.delivery.outcome in (SENT, PERMANENT),
                bounce=r.delivery.bounce,
            )
            for r in applied
        ]
        return reputation_count(answers=answers, now=now)

    @staticmethod
    def _guard_tasks(tallies: dict[uuid.UUID, TaskTally]) -> list[uuid.UUID]:
        """Pause each task past the hard-bounce limit, with an alert; returns the tasks paused.

        The task first, then its tally (task_delete's order too). Of several
        recorders judging the same task, the one that pauses it raises the
        alert; a paused task is left alone. With pausing off, or for a task that
        finished, the one whose compare-and-set on the tally applies alerts. A
        retry after a lost commit does nothing.
        """
        config = reputation_config()
        paused = []
        for tally in tallies_over_limit(tallies.values(), config=config):
            reason = task_guard_reason(tally, config=config)
            pausing = config["pause_tasks"] and task_pause_by_platform(task_id=tally.task_id, reason=reason)
            row = Task.objects.filter(pk=tally.task_id).values_list("name", "owner_id", "status").first()
            if row is None:
                continue
            name, owner_id, status = row
            if not pausing and status == Task.Status.PAUSED:
                # Stopped already (by the guard or its owner): what its last sends
                # bring is judged with what follows a resume.
                continue
            if not task_tally_check(tally) and not pausing:
                continue  # another recorder acted on these figures, or this is a retry
            if pausing:
                paused.append(tally.task_id)
                outcome = "paused; resume it once its recipient list is cleaned"
            elif not config["pause_tasks"]:
                outcome = "not paused (reputation.pause_tasks is off)"
            else:
                outcome = f"not paused: it is {status}"
            task_bounce_alert(task_id=tally.task_id, name=name, owner_id=owner_id, reason=reason, outcome=outcome)
            logger.warning("task over the hard-bounce limit", extra={"task": str(tally.task_id), "paused": pausing})
        return paused

    # --- subtasks -------------------------------------------------------------

    def _record_subtasks(
        self, results: list[SendResult], queue_config: dict, now: dt.datetime, summary: RecordSummary
    ) -> list[SendResult]:
        sent = [r for r in results if r.delivery.outcome == SENT]
        applied_ids = self._mark_sent(sent, now) if sent else set()
        applied = [r for r in sent if r.item.id in applied_ids]
        summary.sent = len(applied)
        retry_at: dict[uuid.UUID, dt.datetime] = {}
        for result in results:
            if result.delivery.outcome != SENT and self._record_failure(result, queue_config, now, summary, retry_at):
                applied.append(result)
        # Retries are work again: their owners go back into the rotation, in
        # this same transaction (see rotation.user_queue_activate). A task
        # cancelled while the attempt was under way keeps nothing pending.
        for owner_id, at in retry_at.items():
            user_queue_activate(user_ids=[owner_id], at=at)
        if retry_at:
            retried = [r.item.id for r in results if r.delivery.outcome == TRANSIENT]
            SubTask.objects.filter(
                pk__in=retried, status=SubTask.Status.PENDING, task__status=Task.Status.CANCELLED
            ).update(status=SubTask.Status.CANCELLED, updated_at=now)
        summary.stale = len(results) - len(applied)
        if summary.stale:
            logger.warning("outcomes for subtasks no longer claimed", extra={"count": summary.stale})
        return applied

    @staticmethod
    def _mark_sent(sent: list[SendResult], now: dt.datetime) -> set[uuid.UUID]:
        if connection.vendor == "postgresql":
            return pgsql.record_sent(rows=[(r.item.id, r.token, r.finished_at) for r in sent], now=now)
        applied: set[uuid.UUID] = set()
        by_token: dict[uuid.UUID, list[SendResult]] = defaultdict(list)
        for r in sent:
            by_token[r.token].append(r)
        for token, group in by_token.items():
            held = SubTask.objects.filter(pk__in=[r.item.id for r in group], claim_token=token, status__in=CLAIMED)
            ids = set(held.values_list("pk", flat=True))
            held.update(
                status=SubTask.Status.SENT,
                sent_at=Case(
                    *[When(pk=r.item.id, then=Value(r.finished_at)) for r in group], output_field=DateTimeField()
                ),
                attempts=F("attempts") + 1,
                error_message="",
                claim_token=None,
                updated_at=now,
            )
            applied |= ids
        return applied

    @staticmethod
    def _record_failure(
        result: SendResult,
        queue_config: dict,
        now: dt.datetime,
        summary: RecordSummary,
        retry_at: dict[uuid.UUID, dt.datetime],
    ) -> bool:
        delivery = result.delivery
        attempts = result.item.attempts + 1
        reply = reply_text(delivery)
        held = SubTask.objects.filter(pk=result.item.id, claim_token=result.token, status__in=CLAIMED)
        if delivery.outcome == TRANSIENT and attempts <= queue_config["max_retries"]:
            delay = retry_delay(attempts, queue_config)
            if delivery.unknown:
                # The server was slower than our timeout and may still be busy
                # with this very mail: give it well beyond that before the same
                # message goes out again, so two sends of it never overlap.
                delay = max(delay, UNKNOWN_OUTCOME_TIMEOUTS * result.timeout)
            when = now + dt.timedelta(seconds=delay)
            count = held.update(
                status=SubTask.Status.PENDING,
                attempts=attempts,
                error_message=reply,
                next_attempt_at=when,
                service=None,
                sender_email=None,
                claim_token=None,
                updated_at=now,
            )
            if count:
                summary.retried += 1
                owner = result.item.owner_id
                retry_at[owner] = min(when, retry_at.get(owner, when))
        else:
            count = held.update(
                status=SubTask.Status.FAILED,
                attempts=attempts,
                error_message=reply,
                claim_token=None,
                updated_at=now,
            )
            summary.failed += count
        return bool(count)

    def _log_attempts(self, results: list[SendResult]) -> set[uuid.UUID]:
        """Insert the attempt rows not written yet; returns the attempt ids this write applies.

        Those are the outcomes whose row this statement inserted, and those of
        subtasks deleted meanwhile (the send happened all the same, but there
        is no row to log it against).
        """
        rows = [
            (
                r.attempt_id,
                r.item.id,
                r.item.service_id,
                r.started_at,
                r.finished_at,
                r.delivery.outcome,
                r.delivery.code,
                storable(r.delivery.reply),
                r.delivery.bounce,
            )
            for r in results
        ]
        if connection.vendor == "postgresql":
            return pgsql.insert_attempts(rows=rows, worker_id=self.worker_id)
        done = set(SendAttempt.objects.filter(pk__in=[row[0] for row in rows]).values_list("pk", flat=True))
        subtasks = set(SubTask.objects.filter(pk__in=[row[1] for row in rows]).values_list("pk", flat=True))
        services = set(EmailService.objects.filter(pk__in=[row[2] for row in rows]).values_list("pk", flat=True))
        SendAttempt.objects.bulk_create(
            SendAttempt(
                id=row[0],
                subtask_id=row[1],
                service_id=row[2] if row[2] in services else None,
                worker_id=self.worker_id,
                started_at=row[3],
                finished_at=row[4],
                outcome=row[5],
                smtp_code=row[6],
                smtp_reply=row[7],
                bounce_class=row[8],
            )
            for row in rows
            if row[0] not in done and row[1] in subtasks
        )
        return {row[0] for row in rows if row[0] not in done}

    # --- services ---------------------------------------------------------------

    def _update_services(
        self, results: list[SendResult], default_rate: float
    ) -> list[tuple[uuid.UUID, str, int, int, bool]]:
        groups: dict[uuid.UUID, list[SendResult]] = defaultdict(list)
        for r in results:
            groups[r.item.service_id].append(r)
        batches = [ServiceBatch.of(service_id, group) for service_id, group in groups.items()]
        # The failure count as it stands now, not as it was when these mails were
        # claimed: another worker's failures may have raised the alert since, and
        # this batch's success is what must resolve it. Locked in id order (the
        # update below takes the same locks), so two recorders never deadlock.
        failing_now = dict(
            EmailService.objects.filter(pk__in=[b.id for b in batches])
            .order_by("pk")
            # NO KEY UPDATE: the attempt rows inserted just before hold KEY SHARE
            # on these services (their foreign key); a plain FOR UPDATE conflicts
            # with that, and two recorders of one service deadlocked on it.
            .select_for_update(no_key=True)
            .values_list("pk", "consecutive_failures")
        )
        if connection.vendor == "postgresql":
            returned = pgsql.update_service_stats(
                rows=[
                    {
                        "ids": b.id,
                        "ok": b.ok,
                        "failed": b.failed,
                        "batch_rate": b.batch_rate,
                        "keep": b.keep,
                        "mean_ms": b.mean_ms,
                        "last_ok": b.last_ok,
                        "trail": b.trailing,
                        "faults": b.faults,
                        "unspaced": b.unspaced,
                    }
                    for b in batches
                ],
                default_rate=default_rate,
            )
            current = {row[0]: (row[1], row[2]) for row in returned}
        else:
            current = {b.id: self._update_service_portable(b, default_rate) for b in batches}
        before = {b.id: max(b.failures_before, failing_now.get(b.id, 0)) for b in batches}
        return [
            (b.id, *current[b.id], before[b.id], bool(b.ok))
            for b in batches
            if b.id in current and (b.faults or before[b.id])
        ]

    @staticmethod
    def _update_service_portable(b: ServiceBatch, default_rate: float) -> tuple[str, int]:
        moving_rate = Case(
            When(FIRST_USE, then=Value(b.batch_rate)),
            default=F("success_rate") * b.keep + b.batch_rate * (1 - b.keep),
            output_field=DecimalField(max_digits=12, decimal_places=6),
        )
        changes = {
            "total_sent": F("total_sent") + b.ok,
            "total_failed": F("total_failed") + b.failed,
            # Rounded and clamped: floating point (SQLite) must not step outside 0-100.
            "success_rate": Least(Greatest(Round(moving_rate, 2), Value(Decimal(0))), Value(Decimal(100))),
            "avg_response_time": Cast(
                Case(
                    When(FIRST_USE, then=Value(b.mean_ms)),
                    default=F("avg_response_time") * b.keep + b.mean_ms * (1 - b.keep),
                ),
                IntegerField(),
            ),
        }
        if b.last_ok is not None:
            changes["last_sent_at"] = Now()
            changes["consecutive_failures"] = Value(b.trailing)
            changes["backoff_level"] = Value(0)
            changes["backoff_until"] = None
        else:
            changes["consecutive_failures"] = F("consecutive_failures") + b.faults
        EmailService.objects.filter(pk=b.id).update(**changes)
        rate = EmailService.objects.filter(pk=b.id).values_list("sending_rate", flat=True).first()
        rate = default_rate if rate is None else rate
        if b.unspaced and rate > 0:  # claimed without a rate, one set since: space from this send
            spaced = Now() + dt.timedelta(seconds=rate)
            EmailService.objects.filter(pk=b.id).update(
                next_available_at=Greatest(Coalesce(F("next_available_at"), spaced), spaced)
            )
        row = EmailService.objects.filter(pk=b.id).values_list("name", "consecutive_failures").first()
        return row if row else ("", 0)

    @staticmethod
    def _maybe_back_off(service_id: uuid.UUID, name: str, consecutive: int, queue_config: dict) -> None:
        """Back a failing service off, doubling the pause each time it comes back and fails again."""
        if consecutive < queue_config["service_failure_threshold"]:
            return
        row = EmailService.objects.filter(pk=service_id).values_list("backoff_level", flat=True).first()
        if row is None:
            return
        level = row
        delay = min(
            queue_config["service_backoff_seconds"] * 2 ** min(level, 30), queue_config["service_backoff_max_seconds"]
        )
        until = Now() + dt.timedelta(seconds=delay)
        # Compare-and-set: failures of sends that were under way when the
        # service was already backed off do not back it off again.
        backed_off = (
            EmailService.objects.filter(pk=service_id, backoff_level=level)
            .filter(Q(backoff_until__isnull=True) | Q(backoff_until__lte=Now()))
            .update(
                backoff_level=level + 1,
                backoff_until=until,
                next_available_at=Greatest(Coalesce(F("next_available_at"), Now()), until),
            )
        )
        if not backed_off:
            return
        signals.service_failing.send(
            sender=EmailService, service_id=service_id, name=name, consecutive=consecutive, backoff_seconds=delay
        )
        logger.warning("service backing off", extra={"service": name, "failures": consecutive, "seconds": delay})
        # Another worker's success may have been recorded between this batch's
        # commit and the alert, and found no alert to resolve: look again.
        # (Its reset commits before its resolve, so one of the two sees the other.)
        recovered = EmailService.objects.filter(
            pk=service_id, consecutive_failures__lt=queue_config["service_failure_threshold"]
        ).exists()
        if recovered:
            signals.service_recovered.send(sender=EmailService, service_id=service_id)

    # --- tasks -----------------------------------------------------------------------

    def _after_commit(self, applied: list[SendResult], now: dt.datetime, summary: RecordSummary) -> None:
        first: dict[uuid.UUID, dt.datetime] = {}
        for r in applied:
            if r.delivery.outcome == SENT and r.item.task_id not in self._first_send_seen:
                first[r.item.task_id] = min(r.finished_at, first.get(r.item.task_id, r.finished_at))
        if first:
            summary.first_sends = TaskWaitMonitorService.record_first_sends(first.items())
            # Remembered once committed: a rolled-back write is done again on the retry.
            transaction.on_commit(lambda: self._seen_first_sends(first))
        touched = {r.item.task_id for r in applied}
        summary.completed_tasks = tasks_complete_if_done(touched)
        # Recovery treats a 'sending' task untouched for half an hour as stuck:
        # tell it this one is alive, at most once a minute per task per worker.
        done = set(summary.completed_tasks)
        stale = [
            t for t in touched if t not in done and now - self._task_touched.get(t, EPOCH) > dt.timedelta(minutes=1)
        ]
        if stale:
            Task.objects.filter(pk__in=stale, status=Task.Status.SENDING).update(updated_at=now)
            transaction.on_commit(lambda: self._touched(stale, now))

    def _seen_first_sends(self, first: dict[uuid.UUID, dt.datetime]) -> None:
        self._first_send_seen.update(first)
        if len(self._first_send_seen) > 100_000:
            self._first_send_seen = set(first)

    def _touched(self, stale: list[uuid.UUID], now: dt.datetime) -> None:
        self._task_touched.update(dict.fromkeys(stale, now))
        if len(self._task_touched) > 100_000:
            self._task_touched = dict.fromkeys(stale, now)
