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
