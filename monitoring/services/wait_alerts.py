"""Alerts on how long tasks wait for their first send (the waits are recorded by queues.first_send_wait).

- ``task_waiting``: a runnable task still waiting past a threshold, raised and
  escalated by the ``alert_waiting_tasks`` sweep, resolved once it sends;
- ``task_wait_exceeded``: a task whose first send came past a threshold.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from django.utils import timezone

from config.services import get_config_by_category
from monitoring.models import Alert
from monitoring.services.alerts import AlertManagerService
from queues.models import Task, TaskWaitMetric

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


def first_sends_alert(*, waits: dict[uuid.UUID, tuple[int, uuid.UUID]], **kwargs: Any) -> None:
    """Receiver of ``queues.signals.first_sends_recorded``: the tasks no longer wait; a long wait is reported."""
    resolved = (
        Alert.objects.filter(alert_type="task_waiting", subject__in=[f"task:{t}" for t in waits])
        .exclude(status=Alert.Status.RESOLVED)
        .update(status=Alert.Status.RESOLVED, resolved_at=timezone.now())
    )
    if resolved:
        logger.info("alerts resolved", extra={"alert_type": "task_waiting", "count": resolved})
    for task_id, (wait, user_id) in waits.items():
        severity = wait_severity(wait)
        if severity is not None:
            AlertManagerService.create_alert(
                alert_type="task_wait_exceeded",
                severity=severity,
                subject=f"task:{task_id}",
                message=f"Task {task_id} waited {wait} s for its first send ({severity} threshold reached).",
                details={"task_id": str(task_id), "user_id": str(user_id), "wait_seconds": wait},
            )


def alert_waiting_tasks(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Raise (or escalate) a task_waiting alert for every runnable task still waiting past a threshold.

    An alert whose task is no longer waiting (sent, paused, finished) is resolved.
    """
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
