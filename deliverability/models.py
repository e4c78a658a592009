"""Who must not be mailed any more, and why.

``queues`` reads this app (the scheduler skips suppressed recipients); this
app names the queue's rows only by string references, never by import, so
the dependency goes one way.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Suppression(models.Model):
    """An address its owner's mail is no longer sent to (owner NULL: nobody's mail, platform-wide)."""

    class Reason(models.TextChoices):
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
        HARD_BOUNCE = "hard_bounce", "Hard bounce"
        COMPLAINT = "complaint", "Complaint"
        MANUAL = "manual", "Manual"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="suppressions",
        help_text="Empty: platform-wide (staff only).",
    )
    # Stored lowercased (suppression_add), compared lowercased.
    email = models.EmailField(max_length=254)
    reason = models.CharField(max_length=20, choices=Reason.choices)
    # Where it came from: "smtp", "unsubscribe", "webhook:<esp>", "api", "admin", "import".
    source = models.CharField(max_length=40)
    task = models.ForeignKey("queues.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    subtask = models.ForeignKey("queues.SubTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    service = models.ForeignKey(
        "queues.EmailService", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The evidence: an SMTP reply, a webhook event's description, an operator's note.
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "suppressions"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "email"], name="uniq_suppressions_owner_email"),
            models.UniqueConstraint(
                fields=["email"], condition=Q(owner__isnull=True), name="uniq_suppressions_platform_email"
            ),
        ]
        indexes = [
            # Complaint rates (deliverability.reputation): reason = 'complaint' AND created_at >= since.
            models.Index(fields=["created_at"], name="idx_suppressions_complaints", condition=Q(reason="complaint")),
        ]

    def __str__(self) -> str:
        return f"{self.email} ({self.reason})"


class ReputationHour(models.Model):
    """Outcomes counted per hour (the database's), so that a window's rates are a sum of a few rows.

    Written by the scheduler's recorder with each batch of outcomes
    (deliverability.reputation.reputation_count), read by the rates.
    """

    hour = models.DateTimeField(help_text="The start of the hour.")
    answered = models.PositiveIntegerField(default=0, help_text="Sends that got a final answer: sent or refused.")
    sent = models.PositiveIntegerField(default=0)
    hard_bounces = models.PositiveIntegerField(default=0)
    policy_rejections = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True


class ServiceReputationHour(ReputationHour):
    service = models.ForeignKey("queues.EmailService", on_delete=models.CASCADE, related_name="+")

    class Meta:
        db_table = "service_reputation_hours"
        ordering = ["-hour", "service"]
        constraints = [
            # Also the index of the rates' "hour >= since GROUP BY service_id".
            models.UniqueConstraint(fields=["hour", "service"], name="uniq_service_reputation_hours"),
        ]

    def __str__(self) -> str:
        return f"{self.service_id} {self.hour:%Y-%m-%d %H}h"


class OwnerReputationHour(ReputationHour):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")

    class Meta:
        db_table = "owner_reputation_hours"
        ordering = ["-hour", "owner"]
        constraints = [
            # Also the index of one owner's rates: owner_id = %s AND hour >= since.
            models.UniqueConstraint(fields=["owner", "hour"], name="uniq_owner_reputation_hours"),
        ]
        indexes = [
            # Every owner's rates (the sweep, /metrics): hour >= since GROUP BY owner_id.
            models.Index(fields=["hour"], name="idx_owner_reputation_hour"),
        ]

    def __str__(self) -> str:
        return f"{self.owner_id} {self.hour:%Y-%m-%d %H}h"


class TaskBounceTally(models.Model):
    """A task's final answers and hard bounces over its whole life: what the hard-bounce guard judges.

    ``checked_*`` are the counts when the guard last paused the task: after a
    resume it judges only what came since, so a resumed task goes on until
    the new answers pass the limit again.
    """

    task = models.OneToOneField("queues.Task", primary_key=True, on_delete=models.CASCADE, related_name="+")
    answered = models.PositiveIntegerField(default=0)
    hard_bounces = models.PositiveIntegerField(default=0)
    checked_answered = models.PositiveIntegerField(default=0)
    checked_hard_bounces = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "task_bounce_tallies"

    def __str__(self) -> str:
        return f"{self.task_id}: {self.hard_bounces} of {self.answered}"
