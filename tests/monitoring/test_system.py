"""SystemMonitorService, TaskMonitorService and the sample_queue sweep."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from monitoring.models import QueueSample
from monitoring.services.samples import queue_sample_take
from monitoring.services.system import SystemMonitorService
from monitoring.services.tasks import TaskMonitorService
from queues.maintenance import run_sweep

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield NOW


def test_queue_depth_counts_queue_statuses_only(subtask_factory, task, email_service):
    for status, n in [("pending", 3), ("allocated", 1), ("processing", 2), ("parked", 1), ("sent", 5)]:
        extra = {"service": email_service} if status in ("allocated", "processing", "sent") else {}
        subtask_factory.create_batch(n, task=task, status=status, **extra)

    assert SystemMonitorService.queue_depth() == {"pending": 3, "allocated": 1, "processing": 2, "parked": 1}


def test_service_usage_says_why_a_service_is_not_ready(frozen, email_service_factory):
    today = frozen.date()
    soon = frozen + dt.timedelta(seconds=30)
    email_service_factory(name="a-ready", used_quota=10, quota_date=today, total_sent=10, total_failed=2)
    email_service_factory(name="b-disabled", is_enabled=False)
    email_service_factory(name="c-quota", daily_quota=5, used_quota=5, quota_date=today)
    email_service_factory(name="d-backoff", backoff_until=soon, next_available_at=soon)
    email_service_factory(name="e-rate", next_available_at=soon)
    # A quota counted for yesterday no longer counts.
    email_service_factory(name="f-new-day", daily_quota=5, used_quota=5, quota_date=today - dt.timedelta(days=1))

    usage = SystemMonitorService.service_usage()

    assert [(u["name"], u["ready"], u["not_ready_reason"], u["quota_used"], u["quota_left"]) for u in usage] == [
        ("a-ready", True, None, 10, 990),
        ("b-disabled", False, "disabled", 0, 1000),
        ("c-quota", False, "quota", 5, 0),
        ("d-backoff", False, "backed_off", 0, 1000),
        ("e-rate", False, "rate", 0, 1000),
        ("f-new-day", True, None, 0, 5),
    ]
    assert (usage[0]["sent"], usage[0]["failed"], usage[0]["success_rate"]) == (10, 2, 100.0)
    assert SystemMonitorService.ready_services() == 2


def test_live_schedulers_are_fresh_and_not_stopped(frozen, heartbeat_factory):
    live = heartbeat_factory(last_seen_at=frozen - dt.timedelta(seconds=19))
    heartbeat_factory(last_seen_at=frozen - dt.timedelta(seconds=21))  # past recovery.worker_dead_seconds (20)
    heartbeat_factory(last_seen_at=frozen, stopped_at=frozen)

    assert SystemMonitorService.live_schedulers() == [live]


def test_oldest_waiting_task_and_backlog(frozen, task_wait_metric_factory, subtask_factory, task_factory):
    old = task_wait_metric_factory(queue_entry_time=frozen - dt.timedelta(seconds=700))
    task_wait_metric_factory(queue_entry_time=frozen - dt.timedelta(seconds=100))
    task_wait_metric_factory(queue_entry_time=frozen - dt.timedelta(hours=2), task=task_factory(status="paused"))
    subtask_factory(task=old.task)
    subtask_factory(task=old.task, next_attempt_at=frozen + dt.timedelta(minutes=5))  # retry later

    oldest = SystemMonitorService.oldest_waiting_task()

    assert (oldest["task_id"], oldest["wait_seconds"]) == (str(old.task_id), 700)
    assert SystemMonitorService.backlog() == {"pending": 2, "due": 1}


def test_task_status_counts_percent_done_and_wait(
    frozen, task, subtask_factory, task_wait_metric_factory, email_service
):
    subtask_factory.create_batch(3, task=task, status="sent", service=email_service)
    subtask_factory(task=task, status="failed")
    subtask_factory.create_batch(4, task=task)
    task_wait_metric_factory(
        task=task,
        queue_entry_time=frozen - dt.timedelta(minutes=10),
        first_send_time=frozen - dt.timedelta(minutes=8),
        wait_duration_seconds=120,
        status="processing",
    )

    status = TaskMonitorService.task_status(task)

    assert status["counts"] == {
        "pending": 4,
        "allocated": 0,
        "processing": 0,
        "sent": 3,
        "failed": 1,
        "cancelled": 0,
        "parked": 0,
        "suppressed": 0,
    }
    assert (status["total"], status["done"], status["percent_done"]) == (8, 4, 50.0)
    assert (status["wait"]["status"], status["wait"]["wait_seconds"]) == ("processing", 120)


def test_task_wait_so_far_while_waiting(frozen, task_wait_metric_factory):
    metric = task_wait_metric_factory(queue_entry_time=frozen - dt.timedelta(seconds=42))

    assert TaskMonitorService.task_wait(metric.task)["wait_seconds"] == 42
    assert [t["task_id"] for t in TaskMonitorService.active_tasks()] == [str(metric.task_id)]


def test_sample_queue_sweep_records_a_sample_and_prunes_old_ones(
    frozen, subtask_factory, email_service_factory, heartbeat_factory
):
    service = email_service_factory(total_sent=7, total_failed=1)
    subtask_factory.create_batch(2)
    subtask_factory(status="processing", service=service)
    heartbeat_factory()
    QueueSample.objects.create(
        taken_at=frozen - dt.timedelta(days=8),
        pending=0,
        in_flight=0,
        ready_services=0,
        live_schedulers=0,
        sent_total=0,
        failed_total=0,
    )

    assert run_sweep("sample_queue") == {"samples_deleted": 1}

    sample = QueueSample.objects.get()
    assert (
        sample.taken_at,
        sample.pending,
        sample.in_flight,
        sample.ready_services,
        sample.live_schedulers,
        sample.sent_total,
        sample.failed_total,
    ) == (frozen, 2, 1, 1, 1, 7, 1)


def test_queue_sample_take_with_nothing_running(db):
    sample = queue_sample_take(now=timezone.now())
    assert (sample.pending, sample.in_flight, sample.ready_services, sample.live_schedulers) == (0, 0, 0, 0)
