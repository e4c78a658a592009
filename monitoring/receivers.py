"""The alerts the queue and the reputation guards raise, from the signals they send.

Connected in MonitoringConfig.ready(). Signals are synchronous: each receiver
runs inside the sender's transaction, as the alert used to be written there.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth import get_user_model

from deliverability import signals as deliverability_signals
from deliverability.reputation import COMPLAINT, HARD_BOUNCE, OWNER_ALERT, SERVICE_ALERT, TASK_ALERT, Rates
from monitoring.models import Alert
from monitoring.services.alerts import AlertManagerService
from monitoring.services.wait_alerts import first_sends_alert
from queues import signals as queue_signals
from queues.models import EmailService


def service_failing_alert(
    *, service_id: uuid.UUID, name: str, consecutive: int, backoff_seconds: float, **kwargs: Any
) -> None:
    AlertManagerService.create_alert(
        alert_type="service_failing",
        severity="critical",
        subject=f"service:{service_id}",
        message=(
            f"Service {name} failed {consecutive} sends in a row; "
            f"it backs off for {backoff_seconds:.0f} s and is tried again after that."
        ),
        details={
            "service_id": str(service_id),
            "consecutive_failures": consecutive,
            "backoff_seconds": backoff_seconds,
        },
    )


def service_recovered_resolve(*, service_id: uuid.UUID, **kwargs: Any) -> int:
    return AlertManagerService.resolve_alert(alert_type="service_failing", subject=f"service:{service_id}")


def outcome_unrecordable_alert(
    *, subtask_id: uuid.UUID, task_id: uuid.UUID, reason: str, error: str, **kwargs: Any
) -> None:
    AlertManagerService.create_alert(
        alert_type="outcome_unrecordable",
        severity="critical",
        subject=f"subtask:{subtask_id}",
        message=f"The outcome of subtask {subtask_id} could not be recorded; it is parked. {reason}",
        details={"subtask_id": str(subtask_id), "task_id": str(task_id), "error": error},
    )


def task_failed_alert(*, task_id: uuid.UUID, name: str, owner_id: uuid.UUID, reason: str, **kwargs: Any) -> None:
    AlertManagerService.create_alert(
        alert_type="task_failed",
        severity=Alert.Severity.CRITICAL,
        subject=f"task:{task_id}",
        message=f"Task {name} failed: {reason}",
        details={"task_id": str(task_id), "user_id": str(owner_id), "reason": reason},
    )


def task_bounces_alert(
    *, task_id: uuid.UUID, name: str, owner_id: uuid.UUID, reason: str, outcome: str, **kwargs: Any
) -> None:
    AlertManagerService.create_alert(
        alert_type=TASK_ALERT,
        severity=Alert.Severity.WARNING,
        subject=f"task:{task_id}",
        message=f"Task {name}: {reason}; {outcome}.",
        details={"task_id": str(task_id), "user_id": str(owner_id), "reason": reason, "outcome": outcome},
    )


def reputation_alerts(
    *, services: dict[uuid.UUID, Rates], owners: dict[uuid.UUID, Rates], config: dict[str, Any], **kwargs: Any
) -> int:
    """Raise (or count again) an alert for each service and owner past a limit; resolve those back under it.

    Returns how many alerts it resolved.
    """
    service_names = dict(EmailService.objects.filter(pk__in=list(services)).values_list("pk", "name"))
    for service_id, r in services.items():
        name = service_names.get(service_id, str(service_id))
        _raise(SERVICE_ALERT, Alert.Severity.CRITICAL, f"service:{service_id}", f"Service {name}", r, config)
    names = dict(get_user_model().objects.filter(pk__in=list(owners)).values_list("pk", "username"))
    for owner_id, r in owners.items():
        label = f"User {names.get(owner_id, owner_id)}"
        _raise(OWNER_ALERT, Alert.Severity.WARNING, f"user:{owner_id}", label, r, config)
    resolved = 0
    for alert_type, prefix, over in ((SERVICE_ALERT, "service:", services), (OWNER_ALERT, "user:", owners)):
        still = {f"{prefix}{key}" for key in over}
        open_subjects = (
            Alert.objects.filter(alert_type=alert_type).exclude(status=Alert.Status.RESOLVED).values_list("subject")
        )
        for (subject,) in open_subjects:
            if subject not in still:
                resolved += AlertManagerService.resolve_alert(alert_type=alert_type, subject=subject)
    return resolved


def _raise(alert_type: str, severity: str, subject: str, label: str, r: Rates, config: dict[str, Any]) -> None:
    problems = []
    if HARD_BOUNCE in r.over_limits:
        problems.append(
            f"hard-bounce rate {100 * r.hard_bounce_rate:.1f} % ({r.hard_bounces} of {r.answered} answered sends; "
            f"limit {100 * config['hard_bounce_rate_limit']:.1f} %)"
        )
    if COMPLAINT in r.over_limits:
        problems.append(
            f"complaint rate {100 * r.complaint_rate:.2f} % ({r.complaints} of {r.sent} delivered; "
            f"limit {100 * config['complaint_rate_limit']:.2f} %)"
        )
    AlertManagerService.create_alert(
        alert_type=alert_type,
        severity=severity,
        subject=subject,
        message=f"{label}: {'; '.join(problems)} over the last {config['window_hours']} h.",
        details={"window_hours": config["window_hours"], **r.as_dict()},
    )


RECEIVERS = (
    (queue_signals.service_failing, service_failing_alert),
    (queue_signals.service_recovered, service_recovered_resolve),
    (queue_signals.outcome_unrecordable, outcome_unrecordable_alert),
    (queue_signals.task_failed, task_failed_alert),
    (queue_signals.first_sends_recorded, first_sends_alert),
    (deliverability_signals.task_over_bounce_limit, task_bounces_alert),
    (deliverability_signals.reputation_judged, reputation_alerts),
)


def connect_receivers() -> None:
    """Connect every receiver once (ready() may run more than once)."""
    for signal, receiver in RECEIVERS:
        signal.connect(receiver, dispatch_uid=f"monitoring.{receiver.__name__}")
