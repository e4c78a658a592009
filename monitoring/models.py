import uuid

from django.conf import settings
from django.db import models


class Alert(models.Model):
    """Something an operator should know about; one open alert per (type, subject).

    Raising an alert that is already open bumps its count and last-seen time
    instead of adding a row, so a service failing a thousand times is one alert.
    """

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"
        EMERGENCY = "emergency", "Emergency"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    alert_type = models.CharField(max_length=50)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    subject = models.CharField(max_length=100, help_text='What it is about, e.g. "service:<id>" or "task:<id>".')
    message = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=15, choices=Status.choices, default=Status.OPEN)
    occurrences = models.PositiveIntegerField(default=1)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "alerts"
        ordering = ["-last_seen_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["alert_type", "subject"],
                condition=~models.Q(status="resolved"),
                name="uniq_alerts_open_type_subject",
            ),
        ]
        indexes = [models.Index(fields=["status", "-last_seen_at"], name="idx_alerts_status_seen")]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.alert_type} {self.subject}"


class QueueSample(models.Model):
    """The queue's shape at one moment, written every minute by the sample_queue sweep.

    Queue depth and ready services are instantaneous figures; sampling them
    lets the dashboard chart the last hours. The sent/failed totals are the
    services' cumulative counters, so the difference between two samples is
    what went out in between.
    """

    taken_at = models.DateTimeField()
    pending = models.PositiveIntegerField()
    in_flight = models.PositiveIntegerField(help_text="Subtasks allocated or processing.")
    ready_services = models.PositiveIntegerField()
    live_schedulers = models.PositiveIntegerField()
    sent_total = models.BigIntegerField(help_text="Sum of the services' total_sent.")
    failed_total = models.BigIntegerField(help_text="Sum of the services' total_failed (failed attempts).")

    class Meta:
        db_table = "queue_samples"
        ordering = ["taken_at"]
        # The charts' range query (taken_at BETWEEN ...) and the prune (taken_at < ...).
        indexes = [models.Index(fields=["taken_at"], name="idx_queue_samples_taken")]

    def __str__(self) -> str:
        return f"{self.taken_at:%Y-%m-%d %H:%M} pending {self.pending}"
