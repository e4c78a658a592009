import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q


class EmailService(models.Model):
    """A sending account: an SMTP relay login or a Django e-mail backend (ESP).

    A service may send once per ``sending_rate`` seconds and ``daily_quota``
    mails per quota day. After each claim the scheduler stores the next free
    moment in ``next_available_at``, so "which services are ready" is a single
    indexed query instead of a computation over all services.
    """

    class Transport(models.TextChoices):
        SMTP = "smtp", "SMTP account"
        BACKEND = "backend", "Django e-mail backend"

    class Security(models.TextChoices):
        NONE = "none", "None (plain)"
        STARTTLS = "starttls", "STARTTLS"
        SSL = "ssl", "SSL/TLS"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    transport = models.CharField(max_length=10, choices=Transport.choices, default=Transport.SMTP)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(default=587)
    username = models.CharField(max_length=255, blank=True)
    # Write-only: never shown by the API, the admin list or the logs.
    password = models.CharField(max_length=255, blank=True)
    security = models.CharField(max_length=10, choices=Security.choices, default=Security.STARTTLS)
    timeout = models.FloatField(default=10.0, help_text="SMTP socket timeout in seconds.")
    backend_path = models.CharField(
        max_length=255,
        blank=True,
        help_text="Dotted path of a Django e-mail backend, e.g. anymail.backends.mailgun.EmailBackend.",
    )
    # Keyword arguments for the backend (API keys...): as secret as the password.
    backend_options = models.JSONField(default=dict, blank=True)
    from_email = models.EmailField(max_length=254)

    is_enabled = models.BooleanField(default=True)
    daily_quota = models.IntegerField(default=1000)
    used_quota = models.IntegerField(default=0)
    quota_date = models.DateField(null=True, blank=True, help_text="The quota day that used_quota counts for.")
    sending_rate = models.FloatField(
        null=True,
        blank=True,
        help_text="Seconds between two sends; empty means the queue.default_sending_rate setting.",
    )

    last_sent_at = models.DateTimeField(null=True, blank=True)
    next_available_at = models.DateTimeField(null=True, blank=True)
    total_sent = models.IntegerField(default=0)
    total_failed = models.IntegerField(default=0)
    success_rate = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal("100.00"))
    avg_response_time = models.IntegerField(default=0, help_text="Milliseconds.")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "email_services"
        ordering = ["name"]
        indexes = [
            # The ready-service query: is_enabled AND used_quota < daily_quota
            # AND (next_available_at IS NULL OR next_available_at <= now).
            models.Index(
                fields=["next_available_at", "is_enabled"],
                name="idx_email_services_next_available_enabled",
                condition=Q(is_enabled=True),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(daily_quota__gte=0), name="email_services_daily_quota_gte_0"),
            models.CheckConstraint(condition=Q(used_quota__gte=0), name="email_services_used_quota_gte_0"),
            models.CheckConstraint(condition=Q(sending_rate__gte=0), name="email_services_sending_rate_gte_0"),
            models.CheckConstraint(
                condition=Q(success_rate__gte=0) & Q(success_rate__lte=100),
                name="email_services_success_rate_0_100",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Task(models.Model):
    """One sending job of a user: one message, many recipients (subtasks)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        PAUSED = "paused", "Paused"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tasks")
    name = models.CharField(max_length=200)
    subject = models.CharField(max_length=998)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True)
    from_name = models.CharField(max_length=100, blank=True)
    reply_to = models.EmailField(max_length=254, blank=True)
    tag = models.ForeignKey(
        "contacts.Tag",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tasks",
        help_text="The tag whose contacts were expanded into recipients, if any.",
    )
    priority = models.SmallIntegerField(default=0, help_text="Higher goes first within the owner's work.")
    scheduled_at = models.DateTimeField(null=True, blank=True, help_text="Not sent before this moment.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "tasks"
        ordering = ["-created_at"]
        indexes = [
            # Stuck-task recovery: status = 'sending' AND updated_at < now - 30 min.
            models.Index(
                fields=["status", "updated_at"],
                name="idx_tasks_sending_updated",
                condition=Q(status="sending"),
            ),
        ]

    def __str__(self) -> str:
        return self.name


class SubTask(models.Model):
    """One recipient of a task: the unit the scheduler claims and sends."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ALLOCATED = "allocated", "Allocated"
        PROCESSING = "processing", "Processing"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    # Statuses in which a service has been charged for the subtask.
    WITH_SERVICE = (Status.ALLOCATED, Status.PROCESSING, Status.SENT)
    TERMINAL = (Status.SENT, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="subtasks")
    # Denormalised from task.owner: fair rotation picks work per user.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False, related_name="subtasks"
    )
    contact = models.ForeignKey(
        "contacts.Contact", null=True, blank=True, on_delete=models.SET_NULL, related_name="subtasks"
    )
    recipient_email = models.EmailField(max_length=254)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    priority = models.SmallIntegerField(default=0)
    # PROTECT: a service with history is disabled, not deleted.
    service = models.ForeignKey(EmailService, null=True, blank=True, on_delete=models.PROTECT, related_name="subtasks")
    sender_email = models.EmailField(max_length=254, null=True, blank=True)
    attempts = models.IntegerField(default=0)
    error_message = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="Not claimed before this moment.")
    message_id = models.CharField(max_length=255, blank=True, help_text="Stable across every attempt.")
    sent_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    claimed_by = models.CharField(max_length=200, blank=True, help_text="Worker id of the current claim.")
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "subtasks"
        ordering = ["created_at"]
        indexes = [
            # The plan's pending-work index: status = 'pending' ordered by
            # priority then age (backlog by priority, oldest pending).
            models.Index(
                fields=["status", "priority", "created_at"],
                name="idx_subtasks_pending_priority",
                condition=Q(status="pending"),
            ),
            models.Index(fields=["task", "status"], name="idx_subtasks_task_status"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status__in=["allocated", "processing", "sent"]) | Q(service__isnull=False),
                name="subtasks_service_when_allocated",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.recipient_email} ({self.status})"
