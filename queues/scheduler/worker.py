"""The scheduler process: claim, send, record, with N sends in flight.

Threads, each with one job:

- the main thread claims (short transactions) and hands the claimed
  subtasks to the senders; it also keeps the heartbeat;
- N sender threads build each mail and talk SMTP over the process's pooled
  connections (queues.scheduler.pool: at most a service's max_connections);
  they never touch the database themselves;
- one starter thread marks claimed subtasks processing a few at a time,
  just before the senders take them up, once their service has a connection
  free and their rate slot is near (queues.scheduler.starter, .slots);
- one recorder thread writes outcomes in batches.

SIGTERM/SIGINT stop the claiming; the sends in flight finish and are
recorded, then the process exits 0. A second signal exits at once (recovery
then gives the unrecorded claims back). If the outcomes cannot be recorded
within ``recovery.worker_dead_seconds`` of the signal, the process gives up on
them and exits 1: its heartbeat says it stopped, so recovery takes the claims
back at once.

A worker whose recorder or claim loop makes no progress for
``recovery.worker_dead_seconds`` is stalled: its heartbeat goes on reporting
(``stalled_since``, health, metrics) but stops refreshing ``last_seen_at``, so
the dead-worker recovery rule gives its claims to others.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from types import FrameType

from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection
from django.db.models import Min, Q
from django.db.models.functions import Now
from django.utils import timezone

from common.dbclock import db_now
from config.services import get_config_by_category
from queues import metrics
from queues.expansion import preparations_pending
from queues.models import EmailService, SubTask, Task, UserQueue, WorkerHeartbeat
from queues.scheduler.claim import (
    Claim,
    ClaimedSubTask,
    ClaimStatus,
    claim_subtasks,
    claims_release,
    effective_rate,
)
from queues.scheduler.messages import CompiledTask, UnsendableAddress, compile_task, render_mail
from queues.scheduler.outcomes import DATA_ERRORS, OutcomeRecorder, RecordSummary, SendResult
from queues.scheduler.pool import ConnectionPools
from queues.scheduler.sharing import ShareKeeper
from queues.scheduler.slots import SLOT_LEAD_SECONDS, SLOT_WINDOW_SECONDS, DbClock, SlotStart, StartMissed
from queues.scheduler.starter import SendStarter
from queues.scheduler.transports import (
    PERMANENT,
    SEND_TIMEOUTS,
    TRANSIENT,
    Delivery,
    ServiceConfig,
)
from queues.services import task_fail
from queues.templates import TemplateError
from queues.wakeup import WorkListener

logger = logging.getLogger("queues.scheduler")

HEARTBEAT_SECONDS = 2.0  # recovery.worker_dead_seconds must allow several to be missed
RETRY_SLEEP_SECONDS = 0.01
IDLE_TICK_SECONDS = 0.5  # idle sleeps re-read the configuration this often
# How long the recorder waits to write outcomes together. Short: a
# rate-limited service stays reserved until its send is recorded.
RECORD_WAIT_SECONDS = 0.02
TASK_CACHE_SECONDS = 60.0
TASK_CACHE_SIZE = 10_000  # compiled tasks kept; the oldest half is dropped past it
# A rate slot's mail goes to a sender this long before its slot: time to mark it
# processing, hand it over and connect (the sender then waits for the slot itself).
SLOT_HANDOVER_SECONDS = 0.1
SWITCH_INTERVAL_SECONDS = 0.001
DB_ERRORS = (OperationalError, InterfaceError)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class WorkItem:
    item: ClaimedSubTask
    token: uuid.UUID
    service: ServiceConfig
    rate: float
    service_failures: int
    task: CompiledTask
    budget: float  # seconds the whole send may take
    must_start_by: float  # time.monotonic(): not started by then (queue.send_lease_seconds), it is given back
    # A rate-limited service's slot: MAIL FROM goes out within these time.monotonic() bounds, or not at all.
    window: tuple[float, float] | None = None
    admitted: bool = False  # holds a connection permit of its service


@dataclass
class Release:
    item: ClaimedSubTask
    token: uuid.UUID


@dataclass
class OutcomeBatch:
    """Outcomes written together, in steps each retried on its own: a step done is never done again."""

    results: list[SendResult]
    releases: list[Release]
    summary: RecordSummary | None = None  # set once recorded
    finished: bool = False  # back-off, alerts, first sends, finished tasks
    released: set[uuid.UUID] = field(default_factory=set)  # claim tokens given back

    @property
    def size(self) -> int:
        return len(self.results) + len(self.releases)


@dataclass
class Stats:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    suppressed: int = 0  # picked, found on a suppression list: never sent
    missed_slots: int = 0  # rate slots whose window passed before the send could start


class SchedulerWorker:
    def __init__(
        self,
        *,
        concurrency: int = 128,
        once: bool = False,
        until_empty: bool = False,
        worker_id: str | None = None,
        maintenance: bool = False,
    ) -> None:
        self.concurrency = concurrency
        self.maintenance = maintenance
        self.once = once
        self.until_empty = until_empty
        self.worker_id = worker_id or new_worker_id()
        self.max_in_flight = concurrency * 2  # recomputed from the claim batch size in the loop
        self.stats = Stats()
        self._stop = threading.Event()  # no more claims
        self._stopping = threading.Event()  # signalled: also give back what has not started
        self._signals = 0
        self._work: queue.Queue[WorkItem | None] = queue.Queue()
        self._results: queue.Queue[SendResult | Release] = queue.Queue()
        # Claimed and not yet recorded / handed to senders and not yet sent.
        self._in_flight = 0
        self._unsent = 0
        self._in_flight_lock = threading.Condition()
        self._senders_done = threading.Event()
        self._recorder_failing = threading.Event()
        # Progress marks (monotonic): a loop that stops moving makes the worker stalled.
        self._claim_progress = time.monotonic()
        self._recorder_progress = time.monotonic()
        self._recorder_failing_since: float | None = None
        self._stop_requested_at: float | None = None
        self._db_unreachable_at = float("-inf")  # last time the claim loop found the database down
        self._abandoned = 0  # outcomes given up on at shutdown (left to recovery)
        self._was_stalled = False
        self._recorder_pause = threading.Event()  # never set: the recorder's retry waits
        self._recorder_died = False
        self._tasks: dict[uuid.UUID, tuple[float, CompiledTask, dt.datetime]] = {}
        self._services: dict[uuid.UUID, ServiceConfig] = {}
        self._last_heartbeat = 0.0
        self._recorder = OutcomeRecorder(worker_id=self.worker_id)
        # Each service's connections: this process's share of max_connections (ShareKeeper).
        self._pools = ConnectionPools(shared=True)
        self._db_clock = DbClock()
        # Claimed work waits here, allocated, until the senders are about to take it up.
        self._starter = SendStarter(
            ready=self._work,
            depth=2 * concurrency,
            release=self._release_unstarted,
            stopping=self._stopping.is_set,
            admit=self._admit,
            unadmit=self._unadmit,
            not_before=lambda work: None if work.window is None else work.window[0] - SLOT_HANDOVER_SECONDS,
            service_of=lambda work: work.service.id,
            expired=self._cannot_start,
        )
        self._share_stop = threading.Event()  # after the senders: they need their connections to the end
        self._share = ShareKeeper(
            worker_id=self.worker_id,
            pools=self._pools,
            waiting=lambda: [work.service for work in self._starter.staged()],
            on_change=self._starter.wake,
            stop=self._share_stop,
        )
        # Latency of successful claims (the ones that found work).
        self._claim_ms: deque[float] = deque(maxlen=100_000)
        # Idle waits end when new work is committed (PostgreSQL); SQLite polls.
        self._listener = WorkListener() if connection.vendor == "postgresql" else None

    # --- lifecycle ---------------------------------------------------------

    def run(self) -> int:
        # A sender woken for its rate slot gets the interpreter within a
        # millisecond, not the default 5 ms: a slot's window is 3 ms wide.
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        previous = self._install_signal_handlers()
        self._heartbeat(started=True)
        logger.info("scheduler started", extra={"worker": self.worker_id, "concurrency": self.concurrency})
        senders = [
            threading.Thread(target=self._sender_loop, name=f"sender-{i}", daemon=True) for i in range(self.concurrency)
        ]
        recorder = threading.Thread(target=self._recorder_main, name="recorder", daemon=True)
        starter = threading.Thread(target=self._starter.run, name="starter", daemon=True)
        share = threading.Thread(target=self._share.run, name="connection-share", daemon=True)
        helpers = [*senders, starter, recorder, share]
        if self.maintenance:
            from queues.maintenance import MaintenanceThread

            maintenance = MaintenanceThread(self._stop)
            helpers.append(maintenance)
        for thread in helpers:
            thread.start()
        try:
            self._main_loop()
        finally:
            self._stop.set()
            self._starter.close()  # what is staged still goes to the senders (or back, when signalled)
            starter.join()
            for _ in senders:
                self._work.put(None)
            for thread in senders:
                thread.join()
            self._pools.close_all()
            self._share_stop.set()
            share.join()
            self._share.release()
            self._senders_done.set()
            recorder.join()
            if self.maintenance:
                maintenance.join()
            if self._listener is not None:
                self._listener.close()
            self._heartbeat(stopped=True)
            self._restore_signal_handlers(previous)
            if self._abandoned:
                logger.error(
                    "stopped with outcomes not recorded: recovery gives their claims back",
                    extra={"worker": self.worker_id, "unrecorded": self._abandoned},
                )
            logger.info(
                "scheduler stopped",
                extra={
                    "worker": self.worker_id,
                    "sent": self.stats.sent,
                    "retried": self.stats.retried,
                    "failed": self.stats.failed,
                    "released": self.stats.released,
                    "suppressed": self.stats.suppressed,
                    "missed_slots": self.stats.missed_slots,
                },
            )
        return 1 if self._abandoned or self._recorder_died else 0

    def stop(self) -> None:
        """Like SIGTERM: no new claims, sends under way finish, the rest is given back."""
        self._stop_requested_at = time.monotonic()
        self._stopping.set()
        self._stop.set()

    def _install_signal_handlers(self) -> dict[int, object]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, object]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            logger.warning("second signal: exiting without waiting for sends in flight", extra={"signal": signum})
            os._exit(1)
        logger.info(
            "stopping: no new claims, finishing sends in flight",
            extra={"signal": signal.Signals(signum).name, "in_flight": self._in_flight},
        )
        self._stop_requested_at = time.monotonic()
        self._stopping.set()
        self._stop.set()

    # --- main thread: claim and dispatch -------------------------------------

    def _main_loop(self) -> None:
        db_failures = 0
        config = get_config_by_category("queue")
        while not self._stop.is_set():
            try:
                config = get_config_by_category("queue")
                self._heartbeat()
                # Claim a batch when the senders are about to run out of work:
                # claims stay large enough to be cheap per mail, senders never
                # idle, and what a process holds beyond what it is sending is
                # about one batch. That bounds how far the order mails leave in
                # can differ from the rotation's order (see README, Fairness).
                batch = config["claim_batch_size"]
                self.max_in_flight = self.concurrency + 4 * batch
                free = self.max_in_flight - self._in_flight
                # (With batch 1 that is "only when a sender is idle": the strictest order.)
                if self._recorder_failing.is_set():
                    # Claiming waits for the recorder: no progress of its own (see _stalled).
                    self._wait_for_capacity(0.5)
                    continue
                if free <= 0 or self._unsent >= self.concurrency + batch // 2:
                    self._wait_for_capacity(0.5)
                    self._claim_progress = time.monotonic()
                    continue
                started = time.perf_counter()
                claim = claim_subtasks(
                    worker_id=self.worker_id,
                    limit=min(batch, free),
                    queue_config=config,
                    max_leases=max(0, self.concurrency - self._unsent),  # the senders free to use them
                )
                metrics.CLAIM_SECONDS.labels(claim.status.value).observe(time.perf_counter() - started)
                if claim.started_at is not None and claim.clock_sample is not None:
                    self._db_clock.sample(claim.clock_sample[0], claim.started_at, claim.clock_sample[1])
                self._claim_progress = time.monotonic()
                db_failures = 0
                if claim.suppressed:
                    self.stats.suppressed += len(claim.suppressed)
                    metrics.MAILS_SUPPRESSED.inc(len(claim.suppressed))
                if claim.status is ClaimStatus.CLAIMED:
                    self._claim_ms.append((time.perf_counter() - started) * 1000)
                    self._dispatch(claim, config)
                    if self.once:
                        break
                    continue
                if claim.status is ClaimStatus.RETRY:
                    self._stop.wait(RETRY_SLEEP_SECONDS)
                    continue
                if claim.status is ClaimStatus.SENDERS_BUSY:
                    self._wait_for_sender(0.5)
                    continue
                if self.once:
                    break
                if self.until_empty and self._in_flight == 0 and not work_remaining():
                    logger.info("queue empty: exiting", extra={"worker": self.worker_id})
                    break
                close_old_connections()
                self._idle_wait(claim.status, config)
                self._claim_progress = time.monotonic()
            except DB_ERRORS as exc:
                db_failures += 1
                delay = min(config["error_sleep_seconds"] * db_failures, 30.0)
                logger.warning("database unavailable, retrying", extra={"error": str(exc).strip(), "sleep": delay})
                self._reset_connection()
                self._stop.wait(delay)
                # The database is what is down (and no heartbeat can tell anyone
                # meanwhile): an outage is no stall of either loop.
                self._db_unreachable_at = self._claim_progress = time.monotonic()
            except Exception:
                # The plan's 5 s pause after an error; the loop itself never dies.
                logger.exception("scheduler loop error")
                self._reset_connection()
                self._stop.wait(config["error_sleep_seconds"])

    def _idle_sleep(self, status: ClaimStatus, config: dict) -> float:
        """The configured sleep, cut short when a service or a retry is known to come due sooner."""
        if self._in_flight:
            # Outcomes about to be recorded free rate-limited services and may queue retries.
            return RETRY_SLEEP_SECONDS * 5
        now = db_now()
        if status is ClaimStatus.NO_SERVICE:
            limit = config["no_service_sleep_seconds"]
            soonest = EmailService.objects.filter(is_enabled=True, next_available_at__gt=now).aggregate(
                at=Min("next_available_at")
            )["at"]
            if soonest is not None:  # claimable a lead before its next slot
                soonest -= dt.timedelta(seconds=SLOT_LEAD_SECONDS)
        else:
            limit = config["no_work_sleep_seconds"]
            soonest = UserQueue.objects.filter(ready_at__gt=now).aggregate(at=Min("ready_at"))["at"]
        if soonest is None:
            return limit
        return max(0.005, min(limit, (soonest - now).total_seconds()))

    def _idle_wait(self, status: ClaimStatus, config: dict) -> None:
        """Sleep as configured, in short ticks that re-read the configuration.

        A sleep shortened in the admin or the API takes effect within the config
        cache's second plus one tick, not after the old (up to 300 s) sleep.
        On PostgreSQL the wait ends as soon as new work is committed
        (queues.wakeup); the sleep is then only the fallback.
        """
        key = "no_service_sleep_seconds" if status is ClaimStatus.NO_SERVICE else "no_work_sleep_seconds"
        started = time.monotonic()
        wait = self._idle_sleep(status, config)
        while not self._stop.is_set():
            remaining = wait - (time.monotonic() - started)
            if remaining <= 0:
                return
            if self._wait_for_work(min(remaining, IDLE_TICK_SECONDS)):
                return
            wait = min(wait, get_config_by_category("queue")[key])
            # Sleeping as configured is the claim loop working: a long idle
            # sleep (up to 300 s) must not make a live worker look dead.
            self._claim_progress = time.monotonic()
            self._heartbeat()

    def _wait_for_work(self, timeout: float) -> bool:
        """Wait up to ``timeout``; True when notified that work may have become claimable."""
        if self._listener is None:
            self._stop.wait(timeout)
            return False
        return self._listener.wait(timeout, self._stop.wait)

    def _wait_for_sender(self, timeout: float) -> None:
        with self._in_flight_lock:
            self._in_flight_lock.wait_for(lambda: self._unsent < self.concurrency, timeout)

    def _wait_for_capacity(self, timeout: float) -> None:
        with self._in_flight_lock:
            self._in_flight_lock.wait_for(
                lambda: self._unsent < self.concurrency and self._in_flight < self.max_in_flight, timeout
            )

    def _dispatch(self, claim: Claim, config: dict) -> None:
        assert claim.token is not None
        self.stats.claimed += len(claim.items)
        with self._in_flight_lock:
            self._in_flight += len(claim.items)
        # Marked processing one by one as senders take them up (SendStarter).
        tasks, broken = self._compiled_tasks({i.task_id for i in claim.items})
        services = self._service_configs(claim)
        rates = {sid: effective_rate(s, config["default_sending_rate"]) for sid, s in claim.services.items()}
        must_start_by = time.monotonic() + config["send_lease_seconds"]
        for item in claim.items:
            if item.task_id in broken:
                # Recorded failed, not given back: a release would be claimed again at once, forever.
                self._results.put(self._not_sent(item, claim.token, rates[item.service_id], broken[item.task_id]))
                continue
            if item.task_id not in tasks or item.service_id not in services:
                self._results.put(Release(item, claim.token))
                continue
            service = services[item.service_id]
            with self._in_flight_lock:
                self._unsent += 1
            self._starter.stage(
                WorkItem(
                    item=item,
                    token=claim.token,
                    service=service,
                    rate=rates[item.service_id],
                    service_failures=claim.services[item.service_id].consecutive_failures,
                    task=tasks[item.task_id],
                    # Three socket timeouts in all, never more: the transport cuts each wait to the deadline.
                    budget=SEND_TIMEOUTS * service.timeout,
                    must_start_by=must_start_by,
                    window=self._slot_window(claim.slots.get(item.id)),
                )
            )
        for task_id, reason in broken.items():
            task_fail(task_id=task_id, reason=reason)

    def _slot_window(self, slot: dt.datetime | None) -> tuple[float, float] | None:
        """A rate slot (database time) as time.monotonic() bounds, narrowed by the clock estimate's error."""
        if slot is None:
            return None
        at = self._db_clock.monotonic_at(slot)
        if at is None or at[1] > SLOT_WINDOW_SECONDS / 4:
            self._refine_clock()
            at = self._db_clock.monotonic_at(slot)
        if at is None:
            return (0.0, -1.0)  # no estimate of the database's clock: the slot cannot be kept
        moment, error = at
        return moment + error, moment + SLOT_WINDOW_SECONDS - error

    def _refine_clock(self, tries: int = 3) -> None:
        """Read the database's clock again until a round trip is quick enough to time slots by."""
        for _ in range(tries):
            before = time.monotonic()
            now = db_now()
            after = time.monotonic()
            self._db_clock.sample(before, now, after)
            if (after - before) / 2 <= SLOT_WINDOW_SECONDS / 4:
                return

    def _admit(self, work: WorkItem) -> bool:
        work.admitted = self._pools.try_acquire(work.service)
        if not work.admitted and self._pools.below_cap(work.service):
            self._share.ask()  # the share may allow more (or nobody asked for this service yet)
        return work.admitted

    def _cannot_start(self, work: WorkItem) -> bool:
        """Staged work that no sender should take up any more: given back to the queue."""
        now = time.monotonic()
        if work.window is not None and now > work.window[1]:
            # Its rate slot passed while it waited for a connection.
            self.stats.missed_slots += 1
            metrics.RATE_SLOTS_MISSED.inc()
            return True
        return now > work.must_start_by or self._pools.closed(work.service.id)

    def _unadmit(self, work: WorkItem) -> None:
        if work.admitted:
            work.admitted = False
            self._pools.release(work.service.id)

    @staticmethod
    def _not_sent(item: ClaimedSubTask, token: uuid.UUID, rate: float, reason: str) -> SendResult:
        now = timezone.now()
        return SendResult(
            item=item,
            token=token,
            delivery=Delivery(PERMANENT, None, reason),
            started_at=now,
            finished_at=now,
            rate=rate,
        )

    def _release_unstarted(self, work: WorkItem) -> None:
        """Give back claimed work that no sender took up (task paused or cancelled, claim lost, stopping)."""
        self._unadmit(work)
        self._results.put(Release(work.item, work.token))
        with self._in_flight_lock:
            self._unsent -= 1
            self._in_flight_lock.notify_all()

    def _service_configs(self, claim: Claim) -> dict[uuid.UUID, ServiceConfig]:
        """Transport settings of the claim's services, loaded again only when a service was edited."""
        stale = [
            sid
            for sid, ready in claim.services.items()
            if sid not in self._services or self._services[sid].version != ready.version.isoformat()
        ]
        if stale:
            # The secrets are read one service at a time (on first use), so one whose keys are
            # gone fails its own sends with the reason instead of stopping every claim.
            for service in EmailService.objects.filter(pk__in=stale).defer("password", "backend_options"):
                self._services[service.pk] = ServiceConfig.from_service(service)
        return {sid: self._services[sid] for sid in claim.services if sid in self._services}

    def _compiled_tasks(self, task_ids: set[uuid.UUID]) -> tuple[dict[uuid.UUID, CompiledTask], dict[uuid.UUID, str]]:
        """The tasks' compiled templates, and why each task that cannot be compiled fails."""
        now = time.monotonic()
        # Compiled again when the task's row changed: an edit made while it was
        # paused (and the resume) must be what goes out next, not the cached copy.
        # Tasks never seen are read whole at once (one query, not a version
        # check and then the rows: one-recipient tasks are all new).
        known = {t for t in task_ids if t in self._tasks}
        fresh = list(Task.objects.filter(pk__in=task_ids - known)) if len(known) < len(task_ids) else []
        versions = {task.pk: task.updated_at for task in fresh}
        if known:
            versions.update(Task.objects.filter(pk__in=known).values_list("pk", "updated_at"))
        missing = [
            t
            for t in versions
            if t not in self._tasks or self._tasks[t][2] != versions[t] or now - self._tasks[t][0] > TASK_CACHE_SECONDS
        ]
        broken: dict[uuid.UUID, str] = {}
        if missing:
            rows = {task.pk: task for task in fresh}
            stale = [t for t in missing if t not in rows]
            if stale:
                rows.update((task.pk, task) for task in Task.objects.filter(pk__in=stale))
            for task in rows.values():
                if task.pk not in missing:
                    continue
                try:
                    self._tasks[task.pk] = (now, compile_task(task), task.updated_at)
                except TemplateError as exc:
                    broken[task.pk] = f"the task's templates cannot be used: {exc}"
                    logger.warning("task templates do not compile", extra={"task": str(task.pk), "error": str(exc)})
        if len(self._tasks) > TASK_CACHE_SIZE:
            # The oldest entries first (insertion order): one-recipient tasks
            # are each used once, and a scan of the whole cache per claim cost
            # more than the claim.
            for task_id in list(itertools.islice(self._tasks, len(self._tasks) - TASK_CACHE_SIZE // 2)):
                del self._tasks[task_id]
        return {t: self._tasks[t][1] for t in versions if t in self._tasks}, broken

    def _heartbeat(self, *, started: bool = False, stopped: bool = False) -> None:
        """Report this worker, in the database's time; liveness only while its loops make progress."""
        now_mono = time.monotonic()
        if not (started or stopped) and now_mono - self._last_heartbeat < HEARTBEAT_SECONDS:
            return
        self._last_heartbeat = now_mono
        try:
            now = db_now()
            fields = self._progress_fields(now, now_mono)
            if stopped:
                fields["stopped_at"] = now
            # Stalled, liveness is the last progress: already older than
            # worker_dead_seconds, so recovery takes the claims back now.
            fields["last_seen_at"] = fields["stalled_since"] or now
            if started or not WorkerHeartbeat.objects.filter(worker_id=self.worker_id).update(**fields):
                # First beat, or the row was deleted under us (pruned while stalled, by hand).
                WorkerHeartbeat.objects.update_or_create(
                    worker_id=self.worker_id,
                    defaults={
                        **fields,
                        "hostname": socket.gethostname(),
                        "pid": os.getpid(),
                        "concurrency": self.concurrency,
                        "started_at": now,
                        "stopped_at": fields.get("stopped_at"),
                    },
                )
        except DB_ERRORS:
            if not stopped:
                raise
            logger.warning("could not record the stop in the heartbeat", extra={"worker": self.worker_id})

    def _progress_fields(self, now: dt.datetime, now_mono: float) -> dict:
        """Heartbeat fields saying how the loops are doing; monotonic ages placed on the database's clock."""

        def at(moment: float | None) -> dt.datetime | None:
            return None if moment is None else now - dt.timedelta(seconds=max(0.0, now_mono - moment))

        stalled = self._stalled(now_mono)
        if stalled and not self._was_stalled:
            logger.error(
                "worker stalled: liveness no longer refreshed, recovery takes its claims back",
                extra={"worker": self.worker_id, "reason": stalled[1], "in_flight": self._in_flight},
            )
        elif self._was_stalled and not stalled:
            logger.warning("worker no longer stalled", extra={"worker": self.worker_id})
        self._was_stalled = bool(stalled)
        return {
            "reported_at": now,
            "in_flight": self._in_flight,
            "sent": self.stats.sent,
            "failed": self.stats.failed,
            "claim_progress_at": at(self._claim_progress),
            "recorder_progress_at": at(self._recorder_progress),
            "recorder_failing_since": at(self._recorder_failing_since),
            "stalled_since": at(stalled[0]) if stalled else None,
            "stalled_reason": stalled[1] if stalled else "",
        }

    def _stalled(self, now_mono: float) -> tuple[float, str] | None:
        """(last progress, which loop) when the recorder or the claim loop has been stuck too long."""
        if self._stop.is_set():
            return None  # stopping: the claim loop is meant to stand still
        limit = get_config_by_category("recovery")["worker_dead_seconds"]
        recorder_progress = max(self._recorder_progress, self._db_unreachable_at)
        if self._in_flight and now_mono - recorder_progress > limit:
            return recorder_progress, "recorder"
        if now_mono - self._claim_progress > limit:
            return self._claim_progress, "claim loop"
        return None

    @staticmethod
    def _reset_connection() -> None:
        try:
            connection.close()
        except DatabaseError:
            logger.debug("closing a broken connection failed")

    # --- sender threads ---------------------------------------------------------

    def _sender_loop(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                return
            self._starter.wake()
            if self._stopping.is_set() or time.monotonic() > work.must_start_by:
                # Not started: give it back (stopping finishes only the sends under way;
                # a mail that waited too long for a connection goes back to the queue).
                self._unadmit(work)
                self._results.put(Release(work.item, work.token))
            else:
                self._results.put(self._send(work))
                self._unadmit(work)  # not sent at all (the mail could not be rendered)
                self._starter.wake()  # its connection is free again
            with self._in_flight_lock:
                self._unsent -= 1
                self._in_flight_lock.notify_all()

    def _now(self) -> dt.datetime:
        """The database's clock as estimated here (the host's before the first claim), for recorded moments."""
        return self._db_clock.now() or timezone.now()

    def _send(self, work: WorkItem) -> SendResult | Release:
        started_at = self._now()
        try:
            mail = render_mail(work.task, work.item, work.service.from_email, work.item.message_id)
        except UnsendableAddress as exc:  # no retry can change the address
            delivery = Delivery(PERMANENT, None, str(exc))
        except Exception as exc:  # this recipient's data breaks the templates: the same on every retry
            logger.warning("mail cannot be rendered", extra={"subtask": str(work.item.id), "error": repr(exc)})
            delivery = Delivery(
                PERMANENT, None, f"cannot render the mail for this recipient: {type(exc).__name__}: {exc}"
            )
        else:
            transport = self._pools.checkout(work.service)
            try:
                slot = (
                    None
                    if work.window is None
                    else SlotStart(self._pools.gate(work.service.id), work.window, work.rate)
                )
                delivery = transport.send(mail, deadline=time.monotonic() + work.budget, slot=slot)
            except StartMissed as exc:
                # Its rate slot passed (the process was too busy): nothing went out, the mail goes back.
                logger.info("rate slot missed", extra={"subtask": str(work.item.id), "late": str(exc)})
                self.stats.missed_slots += 1
                metrics.RATE_SLOTS_MISSED.inc()
                return Release(work.item, work.token)
            except Exception as exc:  # a bug must fail this mail, not the worker
                logger.exception("send failed unexpectedly", extra={"subtask": str(work.item.id)})
                delivery = Delivery(TRANSIENT, None, f"internal error: {type(exc).__name__}: {exc}")
            finally:
                work.admitted = False  # the permit goes back with the connection
                self._pools.checkin(transport)
        finished_at = self._now()
        metrics.SEND_SECONDS.labels(delivery.outcome).observe((finished_at - started_at).total_seconds())
        return SendResult(
            item=work.item,
            token=work.token,
            delivery=delivery,
            started_at=started_at,
            finished_at=finished_at,
            rate=work.rate,
            service_failures=work.service_failures,
            timeout=work.service.timeout,
        )

    # --- recorder thread --------------------------------------------------------------

    def _recorder_main(self) -> None:
        """The recorder thread. If it ever dies, the worker stops: sending on what nobody records would
        only make duplicates. What it held is left to recovery, as after a crash, and the process exits 1."""
        try:
            self._recorder_loop()
        except Exception:
            logger.critical("recorder died: stopping the worker", exc_info=True, extra={"worker": self.worker_id})
            self._recorder_died = True
            self._stopping.set()
            self._stop.set()

    def _recorder_loop(self) -> None:
        batch: OutcomeBatch | None = None
        failures = 0
        try:
            while True:
                if batch is None:
                    if self._senders_done.is_set() and self._results.empty():
                        return
                    try:
                        pending: list[SendResult | Release] = [self._results.get(timeout=0.05)]
                    except queue.Empty:
                        self._recorder_progress = time.monotonic()  # nothing to write is no stall
                        continue
                    self._gather(pending)
                    batch = OutcomeBatch(
                        results=[r for r in pending if isinstance(r, SendResult)],
                        releases=[r for r in pending if isinstance(r, Release)],
                    )
                try:
                    self._write_batch(batch, get_config_by_category("queue"))
                except Exception as exc:
                    # Keep the outcomes and try again (only the steps not yet
                    # done): a database restart must lose nothing. Claiming
                    # pauses meanwhile (see _main_loop).
                    failures += 1
                    if self._recorder_failing_since is None:
                        self._recorder_failing_since = time.monotonic()
                    self._recorder_failing.set()
                    if self._give_up(batch):
                        return
                    # Retried well within worker_dead_seconds: back from an
                    # outage, the outcomes are written before it counts as a stall.
                    dead = get_config_by_category("recovery")["worker_dead_seconds"]
                    delay = min(0.5 * 2**failures, 10.0, dead / 4)
                    if isinstance(exc, DB_ERRORS):
                        logger.warning(
                            "cannot record outcomes yet, retrying",
                            extra={"pending": batch.size, "error": str(exc).strip(), "sleep": delay},
                        )
                    else:
                        logger.exception("recording outcomes failed, retrying", extra={"pending": batch.size})
                    self._reset_connection()
                    # Signalled: shorter waits, so that _give_up comes on time.
                    # An event's wait, not time.sleep: it never fails on a host whose clock is skewed.
                    self._recorder_pause.wait(min(delay, 1.0) if self._stopping.is_set() else delay)
                    continue
                failures = 0
                self._recorder_failing_since = None
                self._recorder_failing.clear()
                self._recorder_progress = time.monotonic()
                with self._in_flight_lock:
                    self._in_flight -= batch.size
                    self._in_flight_lock.notify_all()
                batch = None
        finally:
            connection.close()

    def _give_up(self, batch: OutcomeBatch) -> bool:
        """Signalled, and still unable to record after worker_dead_seconds: leave the claims to recovery."""
        if self._stop_requested_at is None:
            return False
        limit = get_config_by_category("recovery")["worker_dead_seconds"]
        if time.monotonic() - self._stop_requested_at < limit:
            return False
        self._abandoned = batch.size + self._results.qsize()
        logger.error(
            "stopping: giving up on outcomes that cannot be recorded",
            extra={"worker": self.worker_id, "unrecorded": self._abandoned},
        )
        return True

    def _gather(self, pending: list[SendResult | Release]) -> None:
        """Collect more results for one write: up to a claim batch, or RECORD_WAIT_SECONDS."""
        deadline = time.monotonic() + RECORD_WAIT_SECONDS
        target = max(1, min((self.max_in_flight - self.concurrency) // 4, 500))
        while len(pending) < target:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._senders_done.is_set():
                break
            try:
                pending.append(self._results.get(timeout=remaining))
            except queue.Empty:
                break
        while len(pending) < 500:
            try:
                pending.append(self._results.get_nowait())
            except queue.Empty:
                break

    def _write_batch(self, batch: OutcomeBatch, config: dict) -> None:
        """Record, then finish, then give back: each step once, whichever of them a retry resumes."""
        if batch.summary is None:
            summary = self._recorder.record(batch.results, queue_config=config)
            batch.summary = summary
            self.stats.sent += summary.sent
            self.stats.retried += summary.retried
            self.stats.failed += summary.failed
            metrics.count_send_results(
                (self._service_name(r.item.service_id), r.delivery.outcome) for r in batch.results
            )
        if not batch.finished:
            try:
                self._recorder.finish(batch.summary, queue_config=config)
            except DB_ERRORS:
                raise
            except DATA_ERRORS:
                # Alerts, first sends and task completion are bookkeeping: the
                # sweeps catch up with them, and retrying one forever would wedge.
                logger.exception("after-record bookkeeping failed, skipped", extra={"worker": self.worker_id})
            batch.finished = True
        self._give_back(batch, config)

    def _give_back(self, batch: OutcomeBatch, config: dict) -> None:
        by_token: dict[uuid.UUID, list[Release]] = {}
        for release in batch.releases:
            by_token.setdefault(release.token, []).append(release)
        for token, group in by_token.items():
            if token in batch.released:
                continue
            try:
                self.stats.released += claims_release(
                    token=token, ids=[r.item.id for r in group], quota_timezone=config["quota_timezone"]
                )
            except DB_ERRORS:
                raise
            except DATA_ERRORS:
                # Never started, still claimed: recovery gives them back in time.
                logger.exception("could not give claims back, left to recovery", extra={"count": len(group)})
            batch.released.add(token)

    def _service_name(self, service_id: uuid.UUID) -> str:
        service = self._services.get(service_id)
        return service.name if service is not None else str(service_id)

    # --- figures -------------------------------------------------------------------------

    def figures(self) -> dict:
        """What this process did, for benchmarks and reports."""
        latencies = sorted(self._claim_ms)

        def pct(p: float) -> float | None:
            return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] if latencies else None

        return {
            "worker_id": self.worker_id,
            "claimed": self.stats.claimed,
            "sent": self.stats.sent,
            "retried": self.stats.retried,
            "failed": self.stats.failed,
            "released": self.stats.released,
            "suppressed": self.stats.suppressed,
            "missed_slots": self.stats.missed_slots,
            "claims": len(latencies),
            "claim_ms_p50": pct(50),
            "claim_ms_p99": pct(99),
        }


def work_remaining() -> bool:
    """Is any subtask of a runnable, due task still to be sent (now or after a retry delay), or a task
    still preparing?"""
    return (
        preparations_pending()
        or SubTask.objects.filter(
            Q(task__scheduled_at__isnull=True) | Q(task__scheduled_at__lte=Now()),
            status__in=(SubTask.Status.PENDING, SubTask.Status.ALLOCATED, SubTask.Status.PROCESSING),
            task__status__in=(Task.Status.PENDING, Task.Status.SENDING),
        ).exists()
    )
