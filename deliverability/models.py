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

    def __str__(self) -> str:
        return f"{self.email} ({self.reason})"
