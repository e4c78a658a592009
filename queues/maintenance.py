"""Periodic maintenance, declared once: what runs, how often, and why.

The same declarations are installed as django-celery-beat schedules
(``manage.py setup_periodic_tasks``) and, where no Celery broker is configured,
run by every ``run_scheduler`` process itself. Either way only one process
runs a given sweep at a time: a sweep is one transaction that first takes a
PostgreSQL advisory lock (``pg_try_advisory_xact_lock``), which goes with the
transaction, so a sweep killed half-way leaves nothing locked. (On SQLite the
transaction's write lock serialises sweeps the same way.) ``maintenance_runs``
records when each sweep last ran and what it did, so that several processes
do not repeat a sweep that one of them has just done. Those moments, and the
quota day, are the database's (``common.dbclock``): a host whose clock is off
neither repeats sweeps, nor skips them, nor resets a quota day early.

Other apps add their sweeps with ``register_sweep`` from their AppConfig.ready()
(monitoring: ``alert_waiting_tasks``, ``sample_queue``), so the queue runs them
without importing them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Q

from common.dbclock import db_now
from config.services import get_config_by_category
from deliverability.reputation import reputation_check
from queues import metrics
from queues.expansion import preparations_resume, tasks_prepare
from queues.models import EmailService, MaintenanceRun, SendAttempt, WorkerHeartbeat
from queues.recovery import FailureRecoveryService
from queues.scheduler.claim import quota_day

logger = logging.getLogger(__name__)


def recover_dead_workers() -> dict:
    counts = dict(FailureRecoveryService().run(rules=("dead_worker",)).counts)
    metrics.count_recovered(counts)
    return counts


def recover_stuck() -> dict:
    counts = dict(FailureRecoveryService().run().counts)
    metrics.count_recovered(counts)
    return counts


def reset_quotas() -> dict:
    """A service whose used_quota counts an earlier quota day starts the new one from zero.

    Only ever forwards: a quota day later than the database's today is left alone.
    """
    today = quota_day(db_now(), get_config_by_category("queue")["quota_timezone"])
    reset = EmailService.objects.filter(Q(quota_date__lt=today) | Q(quota_date__isnull=True)).update(
        used_quota=0, quota_date=today
    )
    return {"services_reset": reset, "quota_day": today.isoformat()}


def prune() -> dict:
    config = get_config_by_category("maintenance")
    now = db_now()
    attempts, _ = SendAttempt.objects.filter(
        started_at__lt=now - dt.timedelta(days=config["attempt_retention_days"])
    ).delete()
    horizon = now - dt.timedelta(hours=config["heartbeat_retention_hours"])
    heartbeats, _ = WorkerHeartbeat.objects.filter(last_seen_at__lt=horizon).delete()
    return {"attempts_deleted": attempts, "heartbeats_deleted": heartbeats}


@dataclass(frozen=True)
class Sweep:
    name: str
    func: Callable[[], dict]
    every_seconds: float | None  # None: from the recovery.sweep_seconds setting
    reason: str

    @property
    def interval(self) -> float:
        if self.every_seconds is not None:
            return self.every_seconds
        return get_config_by_category("recovery")["sweep_seconds"]


SWEEPS = {
    sweep.name: sweep
    for sweep in [
        Sweep(
            "recover_dead_workers",
            recover_dead_workers,
            None,
            "A dead scheduler's claims go back to the queue within a minute.",
        ),
        Sweep(
            "recover_stuck", recover_stuck, 60, "The plan's recovery: stuck tasks re-queued, timed-out claims reset."
        ),
        Sweep("reset_quotas", reset_quotas, 60, "A new quota day starts from zero within a minute of its midnight."),
        Sweep("prune", prune, 3600, "Old send attempts and dead heartbeats are deleted."),
        Sweep(
            "reputation_check",
            reputation_check,
            60,
            "Services and owners past a bounce or complaint limit raise their alert (resolved once back under); "
            "hourly counts past the longest window are deleted.",
        ),
        Sweep(
            "resume_preparations",
            preparations_resume,
            30,
            "A task left preparing by a Celery worker that died (or a lost message) is queued again.",
        ),
    ]
}


def register_sweep(sweep: Sweep) -> None:
    """Add a sweep that another app runs with the queue's (monitoring registers its own in ready()).

    It is run, scheduled and recorded like the queue's; registering a name again replaces it.
    """
    SWEEPS[sweep.name] = sweep


def run_sweep(name: str, *, force: bool = False) -> dict | None:
    """Run one sweep unless another process is running it or it ran less than its interval ago.

    Returns what it did, or None if it was skipped.
    """
    sweep = SWEEPS[name]
    now = db_now()
    with transaction.atomic():
        if not _try_lock(name):
            return None
        run, _ = MaintenanceRun.objects.select_for_update().get_or_create(name=name)
        due = run.last_started_at is None or now - run.last_started_at >= dt.timedelta(seconds=sweep.interval * 0.9)
        if not (force or due):
            return None
        run.last_started_at = now
        result = sweep.func()
        run.last_finished_at = db_now()
        run.last_result = result
        run.totals = {
            **run.totals,
            **{k: run.totals.get(k, 0) + v for k, v in result.items() if isinstance(v, int | float)},
        }
        run.runs += 1
        run.save()
    if any(result.values()):
        logger.info("maintenance sweep", extra={"sweep": name, **{k: v for k, v in result.items() if v}})
    return result


def due_sweeps() -> list[str]:
    """The sweeps whose interval has passed since they last started (one cheap query)."""
    now = db_now()
    started = dict(MaintenanceRun.objects.values_list("name", "last_started_at"))
    return [
        name
        for name, sweep in SWEEPS.items()
        if started.get(name) is None or now - started[name] >= dt.timedelta(seconds=sweep.interval * 0.9)
    ]


def _try_lock(name: str) -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite: this transaction already holds the database's write lock
    key = int.from_bytes(hashlib.blake2b(f"edm:{name}".encode(), digest_size=8).digest(), "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
        return bool(cursor.fetchone()[0])


# Preparation gets this much of each maintenance tick, so a large task does not hold up the sweeps.
PREPARE_SECONDS = 5.0


class MaintenanceThread(threading.Thread):
    """Runs the due sweeps, and prepares preparing tasks, from inside run_scheduler (used when there is no
    Celery broker)."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__(name="maintenance", daemon=True)
        self.stop = stop

    def run(self) -> None:
        try:
            while not self.stop.wait(1.0):
                try:
                    tasks_prepare(seconds=PREPARE_SECONDS, stop=self.stop)
                except DatabaseError as exc:
                    # The chunk under way rolled back; the next tick (or another scheduler) goes on from its cursor.
                    logger.warning("task preparation failed", extra={"error": str(exc).strip()})
                    connection.close()
                try:
                    due = due_sweeps()
                except DatabaseError as exc:
                    logger.warning("maintenance check failed", extra={"error": str(exc).strip()})
                    connection.close()
                    continue
                for name in due:
                    if self.stop.is_set():
                        break
                    try:
                        run_sweep(name)
                    except DatabaseError as exc:
                        logger.warning("maintenance sweep failed", extra={"sweep": name, "error": str(exc).strip()})
                        close_old_connections()
                        connection.close()
        finally:
            connection.close()
