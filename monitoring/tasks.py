"""Celery tasks of the monitoring app: thin wrappers that call one function each."""

from __future__ import annotations

from celery import shared_task

from monitoring.services.notifications import alert_notify_staff


@shared_task(name="monitoring.notify_alert", ignore_result=True)
def notify_alert_task(alert_id: str, reason: str) -> int:
    """E-mail an alert to staff (see monitoring.services.notifications)."""
    return alert_notify_staff(alert_id=alert_id, reason=reason)
