"""TaskMonitorService: how far a task has got, and how long it waited for its first send."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone

from queues.models import SubTask, Task, TaskWaitMetric
from queues.services import task_progress

DONE = SubTask.TERMINAL
RUNNABLE = (Task.Status.PENDING, Task.Status.SENDING)


class TaskMonitorService:
    @staticmethod
    def task_status(task: Task, *, now: dt.datetime | None = None) -> dict[str, Any]:
        """Counts by subtask status, percent done and the first-send wait of one task.

        percent_done counts every subtask with a final outcome (sent, failed,
        cancelled or suppressed): it says how much is left to do, not how much was delivered.
        """
        now = now or timezone.now()
        counts = task_progress(task)
        total = counts.pop("total")
        done = sum(counts[s] for s in DONE)
        return {
            "task_id": str(task.pk),
            "name": task.name,
            "status": task.status,
            "counts": counts,
            "total": total,
            "done": done,
            "percent_done": round(100 * done / total, 2) if total else 0.0,
            "wait": TaskMonitorService.task_wait(task, now=now),
        }

    @staticmethod
    def task_wait(task: Task, *, now: dt.datetime | None = None) -> dict[str, Any] | None:
        """The task's first-send wait: recorded once it sent, so far while it still waits; None if not queued."""
        now = now or timezone.now()
        metric = TaskWaitMetric.objects.filter(task=task).order_by("-queue_entry_time").first()
        if metric is None:
            return None
        if metric.wait_duration_seconds is not None:
            seconds = metric.wait_duration_seconds
        else:
            seconds = max(0, int((now - metric.queue_entry_time).total_seconds()))
        return {
            "status": metric.status,
            "queue_entry_time": metric.queue_entry_time,
            "first_send_time": metric.first_send_time,
            "wait_seconds": seconds,
        }

    @classmethod
    def active_tasks(
        cls, *, owner: AbstractBaseUser | None = None, limit: int = 50, now: dt.datetime | None = None
    ) -> list[dict[str, Any]]:
        """task_status of the runnable tasks (of one owner, if given), oldest first."""
        now = now or timezone.now()
        tasks = Task.objects.filter(status__in=RUNNABLE).order_by("created_at")
        if owner is not None:
            tasks = tasks.filter(owner=owner)
        return [cls.task_status(task, now=now) for task in tasks[:limit]]
