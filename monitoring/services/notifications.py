"""E-mail to staff when an alert is first raised or its severity rises.

Governed by two settings of the ``alerts`` category, read with safe defaults
so that this works before they are declared: ``notify_staff`` (off unless
set) and ``notify_min_severity`` (critical). The mail is queued with
``transaction.on_commit`` by the alert manager and sent by a Celery task
(inline where no broker is configured), so a slow mail server never holds
the transaction that raised the alert.
"""

from __future__ import annotations

import logging
import smtplib
import uuid

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import get_connection, mail_admins, send_mass_mail
from django.db import DatabaseError

from config.registry import ConfigValidationError
from config.services import get_config_by_category
from monitoring.models import Alert

logger = logging.getLogger(__name__)

SEVERITY_ORDER = [s.value for s in Alert.Severity]
DEFAULT_NOTIFY = False
DEFAULT_MIN_SEVERITY = Alert.Severity.CRITICAL.value
# Without a broker the mail is sent inline, possibly from a scheduler's
# recorder thread: a mail server that hangs must not hold it for long.
SEND_TIMEOUT_SECONDS = 10


def notification_settings() -> tuple[bool, str]:
    """(notify staff?, lowest severity that notifies); defaults when the settings are not declared."""
    try:
        values = get_config_by_category("alerts")
    except (ConfigValidationError, DatabaseError):
        return DEFAULT_NOTIFY, DEFAULT_MIN_SEVERITY
    enabled = values.get("notify_staff", DEFAULT_NOTIFY)
    minimum = values.get("notify_min_severity", DEFAULT_MIN_SEVERITY)
    if minimum not in SEVERITY_ORDER:
        minimum = DEFAULT_MIN_SEVERITY
    return bool(enabled), minimum


def should_notify(severity: str) -> bool:
    enabled, minimum = notification_settings()
    return enabled and SEVERITY_ORDER.index(severity) >= SEVERITY_ORDER.index(minimum)


def alert_notify_enqueue(*, alert_id: uuid.UUID, reason: str) -> None:
    """Hand the notification to Celery (runs it inline without a broker); called after the commit."""
    from kombu.exceptions import OperationalError as BrokerError

    from monitoring.tasks import notify_alert_task

    try:
        notify_alert_task.delay(str(alert_id), reason)
    except (BrokerError, OSError) as exc:
        logger.warning("alert notification not queued", extra={"alert": str(alert_id), "error": str(exc)})


def staff_recipients() -> list[str]:
    """E-mail addresses of the active staff users that have one."""
    users = get_user_model().objects.filter(is_active=True, is_staff=True).exclude(email="")
    return sorted(set(users.values_list("email", flat=True)))


def alert_notify_staff(*, alert_id: uuid.UUID | str, reason: str) -> int:
    """Mail the alert to every active staff user (or settings.ADMINS if none has an address).

    Returns how many messages went out. An alert resolved meanwhile is not sent.
    """
    alert = Alert.objects.filter(pk=alert_id).exclude(status=Alert.Status.RESOLVED).first()
    if alert is None:
        return 0
    subject = f"[EDM {alert.severity}] {alert.alert_type} {alert.subject}"
    body = (
        f"{alert.message}\n\n"
        f"Why you get this: {reason}.\n"
        f"Severity: {alert.severity}\nFirst seen: {alert.first_seen_at:%Y-%m-%d %H:%M:%S %Z}\n"
        f"Occurrences: {alert.occurrences}\nAlert id: {alert.pk}\n"
    )
    recipients = staff_recipients()
    try:
        connection = get_connection(timeout=getattr(settings, "EMAIL_TIMEOUT", None) or SEND_TIMEOUT_SECONDS)
        if recipients:
            messages = [(subject, body, None, [address]) for address in recipients]
            sent = send_mass_mail(messages, connection=connection)
        else:
            mail_admins(subject, body, connection=connection)
            sent = 0
    except (smtplib.SMTPException, OSError) as exc:
        logger.warning("alert notification failed", extra={"alert": str(alert.pk), "error": str(exc)})
        return 0
    logger.info("alert notification sent", extra={"alert": str(alert.pk), "recipients": sent})
    return sent
