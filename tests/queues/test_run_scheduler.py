"""The run_scheduler command itself, in this process (both databases) and as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from django.core.management import call_command

from queues.models import SubTask, Task, WorkerHeartbeat
from queues.services import task_create
from tests.processes import child_environment
from tests.schedulers import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def queue(owner, n):
    return task_create(
        owner=owner,
        name="news",
        subject="Hi {{ contact.first_name }}",
        body_html="<p>Hello {{ contact.first_name }}</p>",
        recipients=[{"email": f"r{i}@{owner.username}.example", "first_name": f"N{i}"} for i in range(n)],
    )


def test_until_empty_sends_everything_and_records_a_heartbeat(smtp_sink, email_service_factory, user_factory):
    smtp_sink.keep_content = True
    email_service_factory(port=smtp_sink.port, sending_rate=0)
    for user in user_factory.create_batch(3):
        queue(user, 20)

    call_command("run_scheduler", "--until-empty", "--concurrency", "3", "--worker-id", "test-worker")

    assert Counter(SubTask.objects.values_list("status", flat=True)) == {"sent": 60}
    assert set(Task.objects.values_list("status", flat=True)) == {"completed"}
    records = smtp_sink.snapshot()
    assert sorted(r.message_id for r in records) == sorted(SubTask.objects.values_list("message_id", flat=True))
    assert b"Hello N0" in next(r.content for r in records if r.recipient.startswith("r0@"))
    beat = WorkerHeartbeat.objects.get(worker_id="test-worker")
    assert (beat.sent, beat.concurrency, beat.stopped_at is not None) == (60, 3, True)


def test_once_makes_one_pass(smtp_sink, email_service_factory, user, queue_config):
    queue_config(claim_batch_size=5)
    email_service_factory(port=smtp_sink.port, sending_rate=0)
    queue(user, 12)

    call_command("run_scheduler", "--once")

    assert Counter(SubTask.objects.values_list("status", flat=True)) == {"sent": 5, "pending": 7}


def test_once_with_nothing_to_do_exits_at_once(db):
    call_command("run_scheduler", "--once")
    assert WorkerHeartbeat.objects.get().stopped_at is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "argument --concurrency: invalid positive_int value: '0'"),
        (["--concurrency", "many"], "argument --concurrency: invalid positive_int value: 'many'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_non_zero_with_one_readable_line(args, message):
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "run_scheduler", *args],
        cwd=ROOT,
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(message)
    assert "Traceback" not in result.stderr


def test_a_heartbeat_row_deleted_under_a_running_worker_is_written_again(db):
    from queues.scheduler.worker import SchedulerWorker

    worker = SchedulerWorker(concurrency=2, worker_id="test-worker")
    worker._heartbeat(started=True)
    WorkerHeartbeat.objects.all().delete()  # pruned while the worker was stalled for a day, or by hand
    worker._last_heartbeat = 0.0  # the next heartbeat is due

    worker._heartbeat()

    beat = WorkerHeartbeat.objects.get()
    assert (beat.worker_id, beat.concurrency, beat.stopped_at, beat.stalled_since) == ("test-worker", 2, None, None)


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_scheduler_asleep_longer_than_the_dead_worker_horizon_keeps_its_heartbeat(
    queue_config, schedulers, email_service
):
    from config.services import ConfigManagerService
    from tests.schedulers import wait_until

    queue_config(no_work_sleep_seconds=120)  # a service is ready, and there is no work: the long sleep
    ConfigManagerService.set_config("recovery", "worker_dead_seconds", 6)
    schedulers.start_one(worker_id="sleeper")
    wait_until(lambda: WorkerHeartbeat.objects.filter(worker_id="sleeper").exists(), timeout=60, what="a start")
    started = WorkerHeartbeat.objects.get(worker_id="sleeper").started_at

    def beating_past_the_horizon() -> bool:
        beat = WorkerHeartbeat.objects.get(worker_id="sleeper")
        return (beat.last_seen_at - started).total_seconds() > 9

    wait_until(beating_past_the_horizon, timeout=60, what="heartbeats during the idle sleep")
