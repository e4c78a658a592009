"""Celery tasks: thin wrappers that call one function each."""

from __future__ import annotations

from celery import shared_task

from queues.maintenance import run_sweep


@shared_task(name="queues.run_sweep", ignore_result=True)
def run_sweep_task(name: str) -> dict | None:
    """One periodic maintenance sweep (see queues.maintenance.SWEEPS); skipped if another process runs it."""
    return run_sweep(name)
