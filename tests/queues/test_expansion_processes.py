"""Preparation by real processes: a preparer killed mid-way and resumed, then sent; a real Celery worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from queues.models import SubTask, Task, TaskRecipientPart
from queues.services import message_id_for, task_create
from tests.processes import child_environment
from tests.schedulers import ROOT, wait_until

BROKER = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14")
CONTENT = {"name": "Big one", "subject": "Hello {{ contact.first_name }}", "body_text": "Hi {{ contact.first_name }}"}


def recipients(n: int) -> list[str]:
    return [f"r{i}@example.org" for i in range(n)]


def manage(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=child_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def prepared(task: Task) -> int:
    return Task.objects.values_list("recipients_prepared", flat=True).get(pk=task.pk)


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_preparer_killed_mid_way_is_resumed_and_every_recipient_gets_one_mail(
    user, smtp_sink, email_service_factory, queue_config, schedulers
):
    n = 3000
    task = task_create(owner=user, recipients=recipients(n), **CONTENT)
    assert task.status == Task.Status.PREPARING

    preparer = manage("prepare_tasks", "--task", str(task.pk), "--chunk-size", "10")
    wait_until(lambda: prepared(task) >= 200, timeout=60, what="the preparer to get going")
    preparer.send_signal(signal.SIGKILL)
    preparer.wait(timeout=30)

    done = prepared(task)
    assert 200 <= done < n, "killed too late to test a resume"
    # Whole chunks only: what is prepared has its subtasks, the rest is still staged.
    assert SubTask.objects.filter(task=task).count() == done
    parts = TaskRecipientPart.objects.filter(task=task)
    left = {part.start + i: entry[0] for part in parts for i, entry in enumerate(part.recipients, 1)}
    assert [left.get(position) for position in range(done + 1, n + 1)] == recipients(n)[done:]
    task.refresh_from_db()
    assert task.status == Task.Status.PREPARING

    resumed = manage("prepare_tasks", "--task", str(task.pk), "--chunk-size", "500")
    output, _ = resumed.communicate(timeout=120)
    # The killed backend's lock may outlive the process by a moment: a resume that found it held did nothing.
    for _ in range(50):
        if Task.objects.get(pk=task.pk).status != Task.Status.PREPARING:
            break
        time.sleep(0.2)
        output, _ = manage("prepare_tasks", "--task", str(task.pk)).communicate(timeout=120)
    assert resumed.returncode == 0, output
    task.refresh_from_db()
    assert (task.status, task.recipients_prepared) == (Task.Status.PENDING, n)

    rows = list(SubTask.objects.filter(task=task).values_list("id", "recipient_email", "message_id"))
    assert Counter(email for _, email, _ in rows) == Counter(recipients(n))

    queue_config(claim_batch_size=50)
    email_service_factory(port=smtp_sink.port, daily_quota=100_000)
    schedulers.start(2, "--until-empty", "--concurrency", "8")
    assert schedulers.wait(timeout=300) == [0, 0], schedulers.logs()

    received = Counter(record.recipient for record in smtp_sink.snapshot())
    assert received == Counter(recipients(n))
    assert {record.message_id for record in smtp_sink.snapshot()} == {message_id_for(id_) for id_, _, _ in rows}
    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED


@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_prepares_a_task_sent_through_redis(user, tmp_path):
    from celery import Celery

    task = task_create(owner=user, recipients=recipients(1500), **CONTENT)
    log_path = tmp_path / "worker.log"
    log = open(log_path, "w")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "edm", "worker", "--pool", "solo", "--loglevel", "INFO"],
        cwd=ROOT,
        env={**child_environment(), "CELERY_BROKER_URL": BROKER},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # What task_create queues once committed when a broker is configured (queues.expansion.preparation_enqueue).
        with Celery("edm-test", broker=BROKER, set_as_current=False) as client:
            client.send_task("queues.prepare_task", args=[str(task.pk)])
        wait_until(
            lambda: Task.objects.get(pk=task.pk).status == Task.Status.PENDING,
            timeout=60,
            what=f"the worker to prepare the task:\n{log_path.read_text()}",
        )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    assert "queues.prepare_task" in log_path.read_text()
    emails = list(SubTask.objects.filter(task=task).order_by("id").values_list("recipient_email", flat=True))
    assert emails == recipients(1500)
