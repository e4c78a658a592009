"""Celery tasks: thin wrappers that call one function each."""

from __future__ import annotations

import uuid

from celery import shared_task

from queues.expansion import tasks_prepare
from queues.maintenance import run_sweep


@shared_task(name="queues.run_sweep", ignore_result=True)
def run_sweep_task(name: str) -> dict | None:
    """One periodic maintenance sweep (see queues.maintenance.SWEEPS); skipped if another process runs it."""
    return run_sweep(name)


@shared_task(name="queues.prepare_task", ignore_result=True)
def prepare_task_task(task_id: str) -> int:
    """Expand a preparing task's recipients into subtasks (queues.expansion); returns the subtasks created.

    Stops at once if another preparer holds the task: that one goes on.
    """
    return tasks_prepare(task_id=uuid.UUID(task_id))
