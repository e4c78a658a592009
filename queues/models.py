import uuid
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone

from common.encrypted_fields import EncryptedJSONField, EncryptedTextField
from common.ids import uuid7
from deliverability.bounces import Bounce
from queues.backend_allowlist import validate_backend_path


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
    # Write-only: never shown by the API, the admin list or the logs; encrypted at rest (common.field_keys).
    password = EncryptedTextField(blank=True, plaintext_max_length=255)
    security = models.CharField(max_length=10, choices=Security.choices, default=Security.STARTTLS)
    timeout = models.FloatField(default=10.0, help_text="SMTP socket timeout in seconds.")
    backend_path = models.CharField(
        max_length=255,
        blank=True,
        help_text="Dotted path of a Django e-mail backend, e.g. anymail.backends.mailgun.EmailBackend.",
        validators=[validate_backend_path],
    )
    # Keyword arguments for the backend (API keys...): as secret as the password, encrypted the same way.
    backend_options = EncryptedJSONField(default=dict, blank=True)
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
    # db_default: SQLite adds the column in place (a table rebuild would
    # recreate an index with NULLS FIRST, which SQLite cannot declare).
    max_connections = models.PositiveSmallIntegerField(
        default=20,
        db_default=20,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Most SMTP connections open to this service at once, from all schedulers together.",
    )

    last_sent_at = models.DateTimeField(null=True, blank=True)
    next_available_at = models.DateTimeField(null=True, blank=True)
    total_sent = models.IntegerField(default=0)
    total_failed = models.IntegerField(default=0)
    success_rate = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal("100.00"))
    avg_response_time = models.IntegerField(default=0, help_text="Milliseconds.")
    consecutive_failures = models.IntegerField(
        default=0, help_text="Failed sends since the last success; the service backs off past a threshold."
    )
    backoff_level = models.IntegerField(default=0, help_text="Back-offs in a row; each one doubles the next.")
    backoff_until = models.DateTimeField(null=True, blank=True, help_text="Backed off (failing) until then.")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "email_services"
        ordering = ["name"]
        indexes = [
            # The ready-service query: is_enabled AND used_quota < daily_quota
            # AND (next_available_at IS NULL OR next_available_at <= now)
            # ORDER BY used_quota, last_sent_at NULLS FIRST. This one finds the
            # ready services when few are ready...
            models.Index(
                fields=["next_available_at", "is_enabled"],
                name="idx_email_services_next_available_enabled",
                condition=Q(is_enabled=True),
            ),
            # ...this one walks them in the query's order when most are, so the
            # LIMIT stops after a few rows instead of sorting thousands.
            models.Index(
                F("used_quota"),
                F("last_sent_at").asc(nulls_first=True),
                F("id"),
                name="idx_email_services_ready_order",
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
        # Its recipients are being expanded into subtasks in the background
        # (queues.expansion); it becomes pending once all of them exist.
        PREPARING = "preparing", "Preparing"
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
    failure_reason = models.TextField(blank=True, help_text="Why the whole task failed, when it did.")
    pause_reason = models.TextField(
        blank=True, help_text="Why the task was paused, when the platform paused it (e.g. too many hard bounces)."
    )
    recipients_total = models.PositiveIntegerField(
        default=0, help_text="Recipients to prepare (for a tag, its members when the task was created)."
    )
    recipients_prepared = models.PositiveIntegerField(
        default=0, help_text="Recipients expanded into subtasks so far; equals the total once prepared."
    )
    # Its recipients are in task_recipient_parts: a list's from the start,
    # a tag's members once the preparation's first chunk has copied them.
    recipients_staged = models.BooleanField(default=False, editable=False)

    class Meta:
        db_table = "tasks"
        ordering = ["-created_at"]
        indexes = [
            # The claim's "runnable tasks of this user, by priority then age":
            # owner_id = %s AND status IN ('pending', 'sending') ORDER BY priority DESC, created_at.
            models.Index(
                fields=["owner", "-priority", "created_at", "id"],
                name="idx_tasks_owner_runnable",
                condition=Q(status__in=["pending", "sending"]),
            ),
            # The preparers' pick: status = 'preparing' ORDER BY created_at
            # LIMIT 1 FOR UPDATE SKIP LOCKED (queues.expansion).
            models.Index(fields=["created_at"], name="idx_tasks_preparing", condition=Q(status="preparing")),
            # Stuck-task recovery: status = 'sending' AND updated_at < now - 30 min.
            models.Index(
                fields=["status", "updated_at"],
                name="idx_tasks_sending_updated",
                condition=Q(status="sending"),
            ),
        ]

    def __str__(self) -> str:
        return self.name


class TaskRecipientPart(models.Model):
    """A run of a task's recipients, in order, until the preparation has made their subtasks.

    ``start`` is the position (1..n over the task) before its first entry.
    A recipient list is cut into parts (``expansion.PART_SIZE``) when the task is
    created (a few rows, one compressed value each: the request that creates
    a task of 100,000 recipients writes little); a tag's members are copied
    into parts by the preparation's first chunk. Each chunk reads the parts
    that hold its positions and deletes those it has used up in the same
    transaction, so what is left is exactly what is still to do, and
    ``Task.recipients_prepared`` is the position it resumes after.

    An entry is ``[email, first_name, last_name, attributes]`` for a recipient
    of a list (its contact is upserted), ``[email, contact_id]`` for a tag's
    member (its contact existed; one deleted since still gets its mail, with
    no contact, as it would have had the task been expanded when it was
    created). The column is stored uncompressed (migration 0019): every chunk
    reads its part twice, and compressing it cost more than the bytes saved.
    """

    id = models.BigAutoField(primary_key=True)
    task = models.ForeignKey(Task, on_delete=models.CASCADE, db_index=False, related_name="+")
    start = models.PositiveIntegerField()
    size = models.PositiveIntegerField()
    recipients = models.JSONField()

    class Meta:
        db_table = "task_recipient_parts"
        ordering = ["task", "start"]
        constraints = [
            # Also the index of the expansion's "task_id = %s AND start < %s".
            models.UniqueConstraint(fields=["task", "start"], name="uniq_task_recipient_parts_start"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} #{self.start + 1}-{self.start + self.size}"


class SubTask(models.Model):
    """One recipient of a task: the unit the scheduler claims and sends."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ALLOCATED = "allocated", "Allocated"
        PROCESSING = "processing", "Processing"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        # Its SMTP conversation started and never reported back; with
        # recovery.unknown_outcome = "park" it waits here for an operator.
        PARKED = "parked", "Parked (outcome unknown)"
        # Its address is on the owner's or the platform's suppression list
        # (deliverability): found so by a claim, never sent, never charged.
        SUPPRESSED = "suppressed", "Suppressed"

    # Statuses in which a service has been charged for the subtask.
    WITH_SERVICE = (Status.ALLOCATED, Status.PROCESSING, Status.SENT)
    TERMINAL = (Status.SENT, Status.FAILED, Status.CANCELLED, Status.SUPPRESSED)
    CLAIMED = (Status.ALLOCATED, Status.PROCESSING)

    # Time-ordered ids: bulk inserts append to the primary key index.
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # task, owner and contact have no foreign-key constraint in the database:
    # its check, one query per row and constraint at commit, was half of the
    # time of preparing a task (queues.expansion), and the code that inserts
    # subtasks already guarantees what it checked. The preparation holds the
    # task row locked until it commits, and each contact it names either was
    # created by the same transaction or is held FOR KEY SHARE by it. The
    # deletes cascade as before: Django's on_delete runs in the ORM, which is
    # how every task, user and contact is deleted.
    #
    # No index of its own: idx_subtasks_task_status (task_id first) serves "task_id = %s".
    task = models.ForeignKey(
        Task, on_delete=models.CASCADE, db_index=False, db_constraint=False, related_name="subtasks"
    )
    # Denormalised from task.owner (always the task's): fair rotation picks work per user.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        db_index=False,
        db_constraint=False,
        related_name="subtasks",
    )
    contact = models.ForeignKey(
        "contacts.Contact",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
        related_name="subtasks",
    )
    recipient_email = models.EmailField(max_length=254)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    priority = models.SmallIntegerField(default=0)
    # PROTECT: a service with history is disabled, not deleted.
    # Indexed by idx_subtasks_service (only rows that have one).
    service = models.ForeignKey(
        EmailService, null=True, blank=True, on_delete=models.PROTECT, db_index=False, related_name="subtasks"
    )
    sender_email = models.EmailField(max_length=254, null=True, blank=True)
    attempts = models.IntegerField(default=0)
    error_message = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now, help_text="Not claimed before this moment.")
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
            # The claim's per-task pick: task_id = %s AND status = 'pending'
            # AND next_attempt_at <= now ORDER BY next_attempt_at, id LIMIT n.
            models.Index(
                fields=["task", "next_attempt_at", "id"],
                name="idx_subtasks_claim",
                condition=Q(status="pending"),
            ),
            # A service's subtasks (service_id IN (...): the PROTECT check of its
            # deletion). Partial: a subtask gets its service when claimed, so
            # the preparation's inserts skip this index.
            models.Index(fields=["service"], name="idx_subtasks_service", condition=Q(service__isnull=False)),
            # Recovery: the claims under way (a small set), by worker and age:
            # status IN ('allocated', 'processing') AND (claimed_by IN dead OR updated_at < ...).
            models.Index(
                fields=["claimed_by", "updated_at"],
                name="idx_subtasks_in_flight",
                condition=Q(status__in=["allocated", "processing"]),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status__in=["allocated", "processing", "sent"]) | Q(service__isnull=False),
                name="subtasks_service_when_allocated",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.recipient_email} ({self.status})"


class UserQueue(models.Model):
    """Fair rotation state: one row per user who has (or may soon have) work.

    Claims take users in ``turn`` order (oldest turn first) and move each one
    served to the back by giving it a new, larger turn; held in the database,
    the rotation is shared by every scheduler process. ``ready_at`` is the
    earliest moment the user may have a claimable subtask; NULL takes the user
    out of the rotation until new work activates it again.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="queue"
    )
    turn = models.BigIntegerField(default=0)
    ready_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "user_queues"
        indexes = [
            # The claim's "next users in rotation": ready_at <= now ORDER BY turn, user_id.
            models.Index(fields=["turn", "user"], name="idx_user_queues_rotation", condition=Q(ready_at__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} turn {self.turn}"


class SendAttempt(models.Model):
    """One attempt to deliver a subtask: through which service, when, and what the server said."""

    class Outcome(models.TextChoices):
        SENT = "sent", "Sent"
        TRANSIENT = "transient", "Transient failure"
        PERMANENT = "permanent", "Permanent failure"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    subtask = models.ForeignKey(SubTask, on_delete=models.CASCADE, related_name="attempts_log")
    service = models.ForeignKey(EmailService, null=True, on_delete=models.SET_NULL, related_name="attempts")
    worker_id = models.CharField(max_length=200)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    smtp_code = models.IntegerField(null=True, blank=True)
    smtp_reply = models.TextField(blank=True)
    # What the refusal said about the recipient (deliverability.bounces); empty when sent or no reply.
    bounce_class = models.CharField(max_length=10, choices=Bounce.choices, blank=True, default="", db_default="")

    class Meta:
        db_table = "send_attempts"
        ordering = ["started_at"]
        indexes = [models.Index(fields=["started_at"], name="idx_send_attempts_started")]

    def __str__(self) -> str:
        return f"{self.subtask_id} {self.outcome}"

    @property
    def duration_ms(self) -> int:
        return int((self.finished_at - self.started_at).total_seconds() * 1000)


class MaintenanceRun(models.Model):
    """When each periodic sweep last ran, and what it did (queues.maintenance)."""

    name = models.CharField(max_length=50, primary_key=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_result = models.JSONField(default=dict, blank=True)
    # Every numeric figure of last_result, added up over all runs.
    totals = models.JSONField(default=dict, blank=True)
    runs = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "maintenance_runs"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ServiceConnectionGrant(models.Model):
    """One scheduler process's share of a service's ``max_connections`` (queues.scheduler.connections).

    ``connections`` is the most the process may have open to the service until
    ``expires_at``: what it was allowed at its last renewal, or what it still
    held then if that was more (busy connections close only as they come back
    idle). A row past ``expires_at`` belongs to a process that has stopped
    renewing; that process has closed its connections by then, so the row no
    longer counts and the next renewal of the service deletes it.
    """

    service = models.ForeignKey(EmailService, on_delete=models.CASCADE, related_name="connection_grants")
    worker_id = models.CharField(max_length=200)
    connections = models.PositiveIntegerField(help_text="Most connections the process may have open.")
    wanted = models.PositiveIntegerField(help_text="Connections the process could use at its last renewal.")
    renewed_at = models.DateTimeField(help_text="Database time of the last renewal.")
    expires_at = models.DateTimeField(help_text="Database time after which the grant no longer counts.")

    class Meta:
        db_table = "service_connection_grants"
        ordering = ["service", "worker_id"]
        constraints = [
            # Also the index of a renewal's "grants of these services".
            models.UniqueConstraint(fields=["service", "worker_id"], name="service_connection_grants_unique"),
        ]
        indexes = [
            # A renewal's and release_all's "this process's grants": worker_id = %s.
            models.Index(fields=["worker_id"], name="idx_connection_grants_worker"),
        ]

    def __str__(self) -> str:
        return f"{self.worker_id}: {self.connections} to {self.service_id}"


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
    task = models.ForeignKey(Task, on_delete=models.CASCADE, db_constraint=False, related_name="wait_metrics")
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
