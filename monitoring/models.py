import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Now


class TaskWaitMetric(models.Model):
    """How long a task waited between entering the queue and its first send.

    The columns are exactly the plan's ``task_wait_metrics`` table: task_id and
    user_id are plain UUID columns without a database foreign key (the metric
    outlives nothing and blocks no delete), exposed to the ORM as relations.
    """

    class Status(models.TextChoices):
        WAITING = "waiting", "Waiting"
        PROCESSING = "processing", "Processing"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task = models.ForeignKey("queues.Task", on_delete=models.CASCADE, db_constraint=False, related_name="wait_metrics")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    queue_entry_time = models.DateTimeField()
    first_send_time = models.DateTimeField(null=True, blank=True)
    wait_duration_seconds = models.IntegerField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.WAITING, db_default=Status.WAITING)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "task_wait_metrics"
        ordering = ["-queue_entry_time"]

    def __str__(self) -> str:
        return f"{self.task_id} {self.status}"


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


class WorkerHeartbeat(models.Model):
    """One row per scheduler process, refreshed every few seconds while it runs.

    Recovery treats the claims of a worker whose heartbeat went stale as
    abandoned; health checks count live workers from here. Every moment here
    is the database's clock.

    ``last_seen_at`` is liveness: a worker whose recorder or claim loop has
    made no progress for ``recovery.worker_dead_seconds`` stops refreshing it
    (so recovery takes its claims back) while still reporting, through
    ``reported_at`` and ``stalled_since``, that it is there and stuck.
    """

    worker_id = models.CharField(max_length=200, primary_key=True)
    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    concurrency = models.PositiveIntegerField(default=1)
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)
    in_flight = models.PositiveIntegerField(default=0)
    sent = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    reported_at = models.DateTimeField(null=True, blank=True, help_text="Last heartbeat written, stalled or not.")
    claim_progress_at = models.DateTimeField(null=True, blank=True, help_text="The claim loop last went round.")
    recorder_progress_at = models.DateTimeField(
        null=True, blank=True, help_text="The recorder last wrote a batch, or had nothing to write."
    )
    recorder_failing_since = models.DateTimeField(
        null=True, blank=True, help_text="First failed write of the batch the recorder is still retrying."
    )
    stalled_since = models.DateTimeField(
        null=True, blank=True, help_text="Set while the recorder or claim loop makes no progress; liveness stops."
    )
    stalled_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        db_table = "worker_heartbeats"
        ordering = ["-last_seen_at"]
        indexes = [models.Index(fields=["last_seen_at"], name="idx_worker_heartbeats_seen")]

    def __str__(self) -> str:
        return self.worker_id


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
