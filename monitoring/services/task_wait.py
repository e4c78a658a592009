"""TaskWaitMonitorService: how long tasks wait between entering the queue and their first send."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from django.utils import timezone

from config.services import get_config_by_category
from monitoring.models import Alert
from monitoring.services.alerts import AlertManagerService
from queues import metrics
from queues.models import TaskWaitMetric

logger = logging.getLogger(__name__)


def wait_severity(wait_seconds: float) -> str | None:
    """The alert level a wait reaches by the alerts.* thresholds, or None below the warning."""
    thresholds = get_config_by_category("alerts")
    for severity, key in (
        (Alert.Severity.EMERGENCY, "emergency_seconds"),
        (Alert.Severity.CRITICAL, "critical_seconds"),
        (Alert.Severity.WARNING, "warning_seconds"),
    ):
        if wait_seconds >= thresholds[key]:
            return severity
    return None


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
        AlertManagerService.resolve_alert(alert_type="task_waiting", subject=f"task:{task_id}")
        severity = wait_severity(wait)
        if severity is not None:
            AlertManagerService.create_alert(
                alert_type="task_wait_exceeded",
                severity=severity,
                subject=f"task:{task_id}",
                message=f"Task {task_id} waited {wait} s for its first send ({severity} threshold reached).",
                details={"task_id": str(task_id), "user_id": str(metric["user_id"]), "wait_seconds": wait},
            )
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
        resolved = (
            Alert.objects.filter(alert_type="task_waiting", subject__in=[f"task:{t}" for t in recorded])
            .exclude(status=Alert.Status.RESOLVED)
            .update(status=Alert.Status.RESOLVED, resolved_at=timezone.now())
        )
        if resolved:
            logger.info("alerts resolved", extra={"alert_type": "task_waiting", "count": resolved})
        for task_id, wait in recorded.items():
            severity = wait_severity(wait)
            if severity is not None:
                AlertManagerService.create_alert(
                    alert_type="task_wait_exceeded",
                    severity=severity,
                    subject=f"task:{task_id}",
                    message=f"Task {task_id} waited {wait} s for its first send ({severity} threshold reached).",
                    details={"task_id": str(task_id), "user_id": str(users[task_id]), "wait_seconds": wait},
                )
        return recorded

    @staticmethod
    def sweep_waiting_tasks(*, now: dt.datetime | None = None) -> dict[str, int]:
        """Raise (or escalate) a task_waiting alert for every runnable task still waiting past a threshold.

        An alert whose task is no longer waiting (sent, paused, finished) is resolved.
        """
        from queues.models import Task

        now = now or timezone.now()
        warning = dt.timedelta(seconds=get_config_by_category("alerts")["warning_seconds"])
        waiting = TaskWaitMetric.objects.filter(
            status=TaskWaitMetric.Status.WAITING,
            queue_entry_time__lte=now - warning,
            task__status__in=(Task.Status.PENDING, Task.Status.SENDING),
        ).values_list("task_id", "user_id", "queue_entry_time")
        raised = set()
        for task_id, user_id, entered in waiting:
            waited = int((now - entered).total_seconds())
            severity = wait_severity(waited)
            if severity is None:
                continue
            AlertManagerService.create_alert(
                alert_type="task_waiting",
                severity=severity,
                subject=f"task:{task_id}",
                message=f"Task {task_id} has waited {waited} s and sent nothing yet ({severity} threshold passed).",
                details={"task_id": str(task_id), "user_id": str(user_id), "wait_seconds": waited},
            )
            raised.add(f"task:{task_id}")
        resolved = 0
        for subject in (
            Alert.objects.filter(alert_type="task_waiting")
            .exclude(status=Alert.Status.RESOLVED)
            .values_list("subject", flat=True)
        ):
            if subject not in raised:
                resolved += AlertManagerService.resolve_alert(alert_type="task_waiting", subject=subject)
        return {"waiting_alerts": len(raised), "resolved": resolved}


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
