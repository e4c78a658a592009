"""The monitoring app's periodic sweeps, run with the queue's (queues.maintenance.register_sweep)."""

from __future__ import annotations

from django.utils import timezone

from monitoring.services.samples import queue_sample_take, queue_samples_prune
from monitoring.services.wait_alerts import alert_waiting_tasks
from queues.maintenance import Sweep, register_sweep


def sample_queue() -> dict:
    # A chart's time stamp, compared with nothing another process wrote: the host's clock will do.
    now = timezone.now()
    queue_sample_take(now=now)
    return {"samples_deleted": queue_samples_prune(now=now)}


SWEEPS = (
    Sweep(
        "alert_waiting_tasks",
        alert_waiting_tasks,
        60,
        "Tasks still waiting for their first send raise their alert past each threshold.",
    ),
    Sweep(
        "sample_queue",
        sample_queue,
        60,
        "Queue depth and ready services are charted over the last hours; samples past a week are deleted.",
    ),
)


def register_sweeps() -> None:
    for sweep in SWEEPS:
        register_sweep(sweep)
