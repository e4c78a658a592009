"""TaskWaitMonitorService: how long tasks wait between entering the queue and their first send.

It records the wait (``TaskWaitMetric``, ``edm_first_send_wait_seconds``) and
announces recorded first sends (``queues.signals.first_sends_recorded``); the
alerts on waits are the monitoring app's (monitoring/services/wait_alerts.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.utils import timezone

from queues import metrics
from queues.models import TaskWaitMetric
from queues.signals import first_sends_recorded


class TaskWaitMonitorService:
    @staticmethod
    def record_task_entry(*, task_id, user_id, entry_time: dt.datetime | None = None) -> TaskWaitMetric:
        """A task entered the queue (or will, at its scheduled time)."""
        return TaskWaitMetric.objects.create(
            task_id=task_id,
            user_id=user_id,
            queue_entry_time=entry_time or timezone.now(),
            status=TaskWaitMetric.Status.WAITING,
        )

    @staticmethod
    def record_first_send(*, task_id, send_time: dt.datetime | None = None) -> int | None:
        """Record a task's first sent mail; returns the wait in seconds, or None if already recorded."""
        send_time = send_time or timezone.now()
        metric = (
            TaskWaitMetric.objects.filter(task_id=task_id, status=TaskWaitMetric.Status.WAITING)
            .values("id", "queue_entry_time", "user_id")
            .first()
        )
        if metric is None:
            return None
        wait = max(0, int((send_time - metric["queue_entry_time"]).total_seconds()))
        # Compare-and-set on the status: of several workers sending the task's
        # first mails at once, exactly one records the first send.
        updated = TaskWaitMetric.objects.filter(pk=metric["id"], status=TaskWaitMetric.Status.WAITING).update(
            status=TaskWaitMetric.Status.PROCESSING, first_send_time=send_time, wait_duration_seconds=wait
        )
        if not updated:
            return None
        metrics.FIRST_SEND_WAIT.observe(wait)
        first_sends_recorded.send(sender=TaskWaitMetric, waits={task_id: (wait, metric["user_id"])})
        return wait

    @classmethod
    def record_first_sends(cls, first_sends: Iterable[tuple[object, dt.datetime]]) -> dict[object, int]:
        """Batch form: {task_id: wait} for the tasks whose first send this call recorded.

        A handful of statements whatever the number of tasks (a batch of
        one-recipient tasks starts as many tasks as it has mails).
        """
        sends = dict(first_sends)
        if not sends:
            return {}
        rows = _record_first_sends(sends)
        recorded = {task_id: wait for task_id, wait, _ in rows}
        users = {task_id: user_id for task_id, _, user_id in rows}
        for wait in recorded.values():
            metrics.FIRST_SEND_WAIT.observe(wait)
        if recorded:
            first_sends_recorded.send(
                sender=TaskWaitMetric, waits={task_id: (wait, users[task_id]) for task_id, wait in recorded.items()}
            )
        return recorded


def _record_first_sends(sends: dict) -> list[tuple]:
    """Mark the waiting metrics of ``sends`` ({task: first send}) processing; (task, wait, user) of each marked."""
    from django.db import connection, transaction
    from django.db.models import Case, IntegerField, Value, When

    if connection.vendor == "postgresql":
        from queues.scheduler.pgsql import record_first_sends

        return record_first_sends(list(sends.items()))
    with transaction.atomic():
        # Locked, then written: of several workers recording the same task's
        # first send, exactly one does.
        waiting = list(
            TaskWaitMetric.objects.filter(task_id__in=list(sends), status=TaskWaitMetric.Status.WAITING)
            .order_by("pk")
            .select_for_update()
            .values_list("pk", "task_id", "queue_entry_time", "user_id")
        )
        if not waiting:
            return []
        waits = {pk: max(0, int((sends[task_id] - entered).total_seconds())) for pk, task_id, entered, _ in waiting}
        TaskWaitMetric.objects.filter(pk__in=list(waits)).update(
            status=TaskWaitMetric.Status.PROCESSING,
            first_send_time=Case(*[When(pk=pk, then=Value(sends[t])) for pk, t, _, _ in waiting]),
            wait_duration_seconds=Case(
                *[When(pk=pk, then=Value(waits[pk])) for pk in waits], output_field=IntegerField()
            ),
        )
    return [(task_id, waits[pk], user_id) for pk, task_id, _, user_id in waiting]
