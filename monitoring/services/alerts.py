"""AlertManagerService: raise, de-duplicate, acknowledge and resolve alerts."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from monitoring.models import Alert
from monitoring.services.notifications import alert_notify_enqueue, should_notify

logger = logging.getLogger(__name__)

_SEVERITY_ORDER = [s.value for s in Alert.Severity]


class AlertManagerService:
    @staticmethod
    def create_alert(
        *, alert_type: str, severity: str, subject: str, message: str, details: dict[str, Any] | None = None
    ) -> Alert:
        """Open an alert, or count one more occurrence of the open alert of that type and subject."""
        now = timezone.now()
        open_alerts = Alert.objects.filter(alert_type=alert_type, subject=subject).exclude(status=Alert.Status.RESOLVED)
        for _ in range(3):
            updated = open_alerts.update(
                occurrences=F("occurrences") + 1, last_seen_at=now, message=message, details=details or {}
            )
            if updated:
                alert = open_alerts.get()
                lower = _SEVERITY_ORDER[: _SEVERITY_ORDER.index(severity)]
                # Compare-and-set: of two processes escalating at once, one notifies.
                # Worse than what was acknowledged: it needs someone's attention again.
                if alert.severity in lower and open_alerts.filter(severity__in=lower).update(
                    severity=severity, status=Alert.Status.OPEN, acknowledged_at=None, acknowledged_by=None
                ):
                    logger.warning(
                        "alert escalated",
                        extra={"alert_type": alert_type, "subject": subject, "from": alert.severity, "to": severity},
                    )
                    alert.refresh_from_db()
                    _notify_after_commit(alert, f"its severity rose to {severity}")
                return alert
            try:
                with transaction.atomic():
                    alert = Alert.objects.create(
                        alert_type=alert_type,
                        severity=severity,
                        subject=subject,
                        message=message,
                        details=details or {},
                        last_seen_at=now,
                    )
            except IntegrityError:
                continue  # raised by another process a moment ago: count it as an occurrence
            logger.warning("alert raised", extra={"alert_type": alert_type, "subject": subject, "severity": severity})
            _notify_after_commit(alert, "it was raised")
            return alert
        raise RuntimeError(f"could not raise alert {alert_type} {subject}")  # pragma: no cover

    @staticmethod
    def resolve_alert(*, alert_type: str, subject: str) -> int:
        """Resolve the open alert of that type and subject, if any; returns how many were resolved."""
        resolved = (
            Alert.objects.filter(alert_type=alert_type, subject=subject)
            .exclude(status=Alert.Status.RESOLVED)
            .update(status=Alert.Status.RESOLVED, resolved_at=timezone.now())
        )
        if resolved:
            logger.info("alert resolved", extra={"alert_type": alert_type, "subject": subject})
        return resolved

    @staticmethod
    def acknowledge_alert(alert: Alert, *, user) -> bool:
        updated = Alert.objects.filter(pk=alert.pk, status=Alert.Status.OPEN).update(
            status=Alert.Status.ACKNOWLEDGED, acknowledged_at=timezone.now(), acknowledged_by=user
        )
        return bool(updated)

    @staticmethod
    def resolve(alert: Alert) -> bool:
        """Resolve this alert (an operator's decision); False if it was already resolved."""
        updated = (
            Alert.objects.filter(pk=alert.pk)
            .exclude(status=Alert.Status.RESOLVED)
            .update(status=Alert.Status.RESOLVED, resolved_at=timezone.now())
        )
        return bool(updated)


def _notify_after_commit(alert: Alert, reason: str) -> None:
    """Mail staff once the alert is committed (never from inside the transaction that raised it)."""
    if not should_notify(alert.severity):
        return
    transaction.on_commit(partial(alert_notify_enqueue, alert_id=alert.pk, reason=reason))
