"""Periodic maintenance: the sweeps, their locking, the beat schedules and the Celery task."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from monitoring.models import Alert
from queues.maintenance import SWEEPS, due_sweeps, run_sweep
from queues.models import EmailService, MaintenanceRun, SendAttempt, WorkerHeartbeat
from queues.services import task_create, task_pause
from queues.tasks import run_sweep_task
from tests.processes import run_in_processes


def test_every_sweep_runs_once_per_interval_and_is_recorded(db):
    assert set(due_sweeps()) == set(SWEEPS)
    for name in SWEEPS:
        assert run_sweep(name) is not None
    assert due_sweeps() == []
    assert run_sweep("recover_stuck") is None  # ran less than a minute ago
    assert run_sweep("recover_stuck", force=True) is not None
    runs = dict(MaintenanceRun.objects.values_list("name", "runs"))
    assert runs == {**dict.fromkeys(SWEEPS, 1), "recover_stuck": 2}
    assert MaintenanceRun.objects.get(name="reset_quotas").last_finished_at is not None


def test_reset_quotas_starts_a_new_quota_day(email_service_factory):
    today = timezone.now().date()
    old = email_service_factory(used_quota=80, quota_date=today - dt.timedelta(days=1))
    current = email_service_factory(used_quota=30, quota_date=today)

    result = run_sweep("reset_quotas")

    assert result["services_reset"] == 1
    old.refresh_from_db()
    current.refresh_from_db()
    assert (old.used_quota, old.quota_date, current.used_quota) == (0, today, 30)


def test_prune_drops_old_attempts_and_dead_heartbeats(subtask, email_service):
    now = timezone.now()
    for days in (40, 1):
        SendAttempt.objects.create(
            subtask=subtask,
            service=email_service,
            worker_id="w",
            outcome="sent",
            started_at=now - dt.timedelta(days=days),
            finished_at=now - dt.timedelta(days=days),
        )
    for hours, name in ((30, "gone"), (1, "recent")):
        seen = now - dt.timedelta(hours=hours)
        WorkerHeartbeat.objects.create(worker_id=name, hostname="h", pid=1, started_at=seen, last_seen_at=seen)

    assert run_sweep("prune") == {"attempts_deleted": 1, "heartbeats_deleted": 1}
    assert list(WorkerHeartbeat.objects.values_list("worker_id", flat=True)) == ["recent"]


def test_waiting_tasks_raise_escalate_and_resolve_their_alert(user, email_service):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        task = task_create(owner=user, name="t", subject="s", body_text="b", recipients=["a@example.org"])
        paused = task_create(owner=user, name="p", subject="s", body_text="b", recipients=["b@example.org"])
        task_pause(task=paused)

    def sweep(after: int) -> list[tuple[str, str, str]]:
        with time_machine.travel(start + dt.timedelta(seconds=after), tick=False):
            run_sweep("alert_waiting_tasks", force=True)
        return list(Alert.objects.filter(alert_type="task_waiting").values_list("subject", "severity", "status"))

    assert sweep(299) == []
    assert sweep(301) == [(f"task:{task.pk}", "warning", "open")]  # the paused one is not waiting in the queue
    assert sweep(601) == [(f"task:{task.pk}", "critical", "open")]
    assert sweep(1801) == [(f"task:{task.pk}", "emergency", "open")]
    assert Alert.objects.get(alert_type="task_waiting").occurrences == 3
    task.subtasks.update(status="sent", service=email_service)
    from queues.first_send_wait import TaskWaitMonitorService

    TaskWaitMonitorService.record_first_send(task_id=task.pk, send_time=start + dt.timedelta(seconds=1900))
    assert sweep(1900)[0][2] == "resolved"


def test_setup_periodic_tasks_installs_every_sweep_once(db, capsys):
    call_command("setup_periodic_tasks")
    call_command("setup_periodic_tasks")

    tasks = {t.name: t for t in PeriodicTask.objects.filter(name__startswith="edm: ")}
    assert set(tasks) == {f"edm: {name}" for name in SWEEPS}
    recover = tasks["edm: recover_stuck"]
    assert (recover.task, json.loads(recover.args), recover.interval.every) == (
        "queues.run_sweep",
        ["recover_stuck"],
        60,
    )
    assert tasks["edm: recover_dead_workers"].interval.every == 5
    assert "installed recover_stuck: every 60 s" in capsys.readouterr().out


def test_freshly_installed_sweeps_are_due_at_beats_first_tick_and_reinstalling_keeps_their_history(db):
    from django_celery_beat.schedulers import ModelEntry

    from edm.celery import app

    call_command("setup_periodic_tasks")
    tasks = PeriodicTask.objects.filter(name__startswith="edm: ")
    # Beat's first look at a new schedule: due now, not one interval after the install.
    assert {t.name: ModelEntry(t, app=app).is_due()[0] for t in tasks} == {t.name: True for t in tasks}

    ran_at = timezone.now() - dt.timedelta(seconds=5)
    tasks.update(last_run_at=ran_at)
    call_command("setup_periodic_tasks")  # the next deploy
    tasks = PeriodicTask.objects.filter(name__startswith="edm: ")
    assert {t.last_run_at for t in tasks} == {ran_at}
    assert ModelEntry(tasks.get(name="edm: prune"), app=app).is_due()[0] is False


def test_the_celery_task_runs_the_sweep(db):
    # Eager here (no broker in the tests' settings); the worker runs the same function.
    assert run_sweep_task.delay("reset_quotas").get() == {
        "services_reset": 0,
        "quota_day": timezone.now().date().isoformat(),
    }


def hold_sweep_lock(name: str, tried) -> bool:
    """In another process: take the sweep's lock as run_sweep does; let go once both processes have tried."""
    from django.db import transaction

    from queues.maintenance import _try_lock

    with transaction.atomic():
        got = _try_lock(name)
        tried.wait(timeout=60)
    return got


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_only_one_process_runs_a_sweep_at_a_time():
    # Two processes take the lock together, and hold what they got until both have tried: exactly one gets it.
    with multiprocessing.get_context("spawn").Manager() as manager:
        tried = manager.Barrier(2)
        assert sorted(run_in_processes(hold_sweep_lock, [("prune", tried), ("prune", tried)])) == [False, True]


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_sweep_killed_half_way_leaves_nothing_locked(tmp_path):
    import subprocess
    import sys

    from tests.processes import child_environment
    from tests.schedulers import ROOT, wait_until

    script = (
        "import django, time; django.setup()\n"
        "from django.db import connection, transaction\n"
        "from queues.maintenance import _try_lock\n"
        "with transaction.atomic():\n"
        "    with connection.cursor() as cursor:\n"
        "        cursor.execute('SELECT pg_backend_pid()')\n"
        "        print(cursor.fetchone()[0], flush=True)\n"
        "    print(_try_lock('recover_stuck'), flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=child_environment(), stdout=subprocess.PIPE, text=True
    )
    try:
        backend = int(holder.stdout.readline())
        assert holder.stdout.readline().strip() == "True"
        assert run_sweep("recover_stuck", force=True) is None  # held by the other process
        holder.kill()  # killed half-way through its sweep
        holder.wait()
        # The server notices the dead client when it next reads from it; only then can anything be freed.
        wait_until(lambda: not backend_alive(backend), timeout=30, what="the killed sweep's backend to end")
        assert advisory_locks() == 0
        assert run_sweep("recover_stuck", force=True) is not None
    finally:
        holder.kill()
    assert connection.vendor == "postgresql"
    assert EmailService.objects.count() == 0


def backend_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0] == 1


def advisory_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        )
        return cursor.fetchone()[0]
