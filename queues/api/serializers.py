"""Service, task and subtask payloads. Types and sizes are checked here; rules live in queues.services."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.api.fields import EmailOrBlankField
from common.api.strict_input import StrictInputMixin
from contacts.models import Tag
from contacts.services import EMAIL_MAX, json_problem
from queues.models import EmailService, SendAttempt, SubTask, Task, TaskWaitMetric
from queues.services import MAX_BODY, MAX_SUBJECT, task_progress

SMALLINT = (-32768, 32767)
INT = (0, 2**31 - 1)
# Written by the scheduler as it sends; a client's copy would overwrite newer values.
SERVICE_COUNTERS = [
    "used_quota",
    "quota_date",
    "last_sent_at",
    "next_available_at",
    "total_sent",
    "total_failed",
    "success_rate",
    "avg_response_time",
    "consecutive_failures",
    "backoff_level",
    "backoff_until",
]


class EmailServiceSerializer(StrictInputMixin, serializers.ModelSerializer):
    """A sending account. ``password`` and ``backend_options`` can be written, never read back.

    ``is_enabled`` may be set when the service is created; afterwards the
    enable/disable actions change it (enabling also clears a failure back-off).
    An update saves only the fields it was given, so it never overwrites the
    counters the scheduler is changing at the same moment. A PUT must give
    every field but the secrets (kept when left out).
    """

    create_only_fields = ("is_enabled",)

    port = serializers.IntegerField(min_value=1, max_value=65535, default=587)
    password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=255, trim_whitespace=False
    )
    backend_options = serializers.DictField(
        write_only=True, required=False, help_text="Keyword arguments of the backend (API keys...)."
    )
    timeout = serializers.FloatField(min_value=0.1, max_value=600, default=10.0)
    daily_quota = serializers.IntegerField(min_value=0, max_value=INT[1], default=1000)
    sending_rate = serializers.FloatField(
        min_value=0,
        max_value=86400,
        required=False,
        allow_null=True,
        help_text="Seconds between two sends; null means the queue.default_sending_rate setting.",
    )
    max_connections = serializers.IntegerField(
        min_value=1,
        max_value=1000,
        default=20,
        help_text="Most SMTP connections open to this service at once, from all schedulers together.",
    )
    has_password = serializers.SerializerMethodField()

    class Meta:
        model = EmailService
        fields = [
            "id",
            "name",
            "transport",
            "host",
            "port",
            "username",
            "password",
            "has_password",
            "security",
            "timeout",
            "backend_path",
            "backend_options",
            "from_email",
            "is_enabled",
            "daily_quota",
            "sending_rate",
            "max_connections",
            *SERVICE_COUNTERS,
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", *SERVICE_COUNTERS, "created_at", "updated_at"]

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_has_password(self, service: EmailService) -> bool:
        return bool(service.password)

    def validate_backend_options(self, value: dict) -> dict:
        if problem := json_problem(value):
            raise serializers.ValidationError(problem)
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        current = self.instance or EmailService()  # a new service starts from the model defaults
        merged = {field: attrs.get(field, getattr(current, field)) for field in ("transport", "host", "backend_path")}
        if merged["transport"] == EmailService.Transport.SMTP and not merged["host"]:
            raise serializers.ValidationError({"host": ["an SMTP service needs a host"]})
        if merged["transport"] == EmailService.Transport.BACKEND and not merged["backend_path"]:
            raise serializers.ValidationError({"backend_path": ["a backend service needs a backend path"]})
        return attrs

    def update(self, instance: EmailService, validated_data: dict[str, Any]) -> EmailService:
        for field, value in validated_data.items():
            setattr(instance, field, value)
        instance.save(update_fields=[*validated_data, "updated_at"])
        return instance


RECIPIENT_KEYS = {"email", "first_name", "last_name", "attributes"}


class RecipientField(serializers.Field):
    """An address, or {"email", "first_name", "last_name", "attributes"}; queues.services.parse_recipients decides."""

    default_error_messages = {
        "type": "expected an e-mail address or an object with an 'email' string",
        "long": f"e-mail addresses have at most {EMAIL_MAX} characters",
        "names": "first_name and last_name must be strings of at most 100 characters",
        "attributes": "'attributes' must be an object",
    }

    def to_internal_value(self, data: Any) -> Any:
        email = data if isinstance(data, str) else data.get("email") if isinstance(data, dict) else None
        if not isinstance(email, str):
            self.fail("type")
        if len(email.strip()) > EMAIL_MAX:
            self.fail("long")
        if isinstance(data, dict):
            if unknown := sorted(set(data) - RECIPIENT_KEYS):
                raise serializers.ValidationError(f"unknown key(s) in a recipient: {', '.join(unknown)}")
            for key in ("first_name", "last_name"):
                name = data.get(key)
                if name is not None and (not isinstance(name, str) or len(name) > 100):
                    self.fail("names")
            if data.get("attributes") is not None and not isinstance(data["attributes"], dict):
                self.fail("attributes")
        if problem := json_problem(data):
            raise serializers.ValidationError(problem)
        return data

    def to_representation(self, value: Any) -> Any:
        return value


_RECIPIENTS_SCHEMA = {
    "type": "array",
    "items": {
        "oneOf": [
            {"type": "string", "format": "email"},
            {
                "type": "object",
                "properties": {
                    "email": {"type": "string", "format": "email"},
                    "first_name": {"type": "string", "maxLength": 100},
                    "last_name": {"type": "string", "maxLength": 100},
                    "attributes": {"type": "object", "additionalProperties": True},
                },
                "required": ["email"],
                "additionalProperties": False,
            },
        ]
    },
}


# Documented as what it accepts: each item an address or a recipient object.
@extend_schema_field(_RECIPIENTS_SCHEMA)
class RecipientListField(serializers.ListField):
    child = RecipientField()


class TaskCreateSerializer(StrictInputMixin, serializers.Serializer):
    """A new task: content, and either ``recipients`` or ``tag`` (one of your tags)."""

    name = serializers.CharField(max_length=200)
    subject = serializers.CharField(max_length=MAX_SUBJECT)
    body_text = serializers.CharField(
        required=False, allow_blank=True, default="", trim_whitespace=False, max_length=MAX_BODY
    )
    body_html = serializers.CharField(
        required=False, allow_blank=True, default="", trim_whitespace=False, max_length=MAX_BODY
    )
    from_name = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)
    reply_to = EmailOrBlankField(required=False, allow_blank=True, default="", max_length=EMAIL_MAX)
    priority = serializers.IntegerField(required=False, default=0, min_value=SMALLINT[0], max_value=SMALLINT[1])
    scheduled_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    recipients = RecipientListField(
        required=False, max_length=100_000, help_text="Addresses or recipient objects; give this or tag."
    )
    tag = serializers.PrimaryKeyRelatedField(
        queryset=Tag.objects.none(),
        required=False,
        allow_null=True,
        help_text="One of your tags; give this or recipients.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None and request.user.is_authenticated:
            # Without the member list: a tag's may hold 100,000 ids, and task_create counts them in SQL.
            self.fields["tag"].queryset = Tag.objects.filter(owner=request.user).defer("contacts")


class TaskUpdateSerializer(StrictInputMixin, serializers.Serializer):
    """An edit of a task: only the fields given change, and only those its status allows (409 otherwise)."""

    name = serializers.CharField(required=False, max_length=200)
    subject = serializers.CharField(required=False, max_length=MAX_SUBJECT)
    body_text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, max_length=MAX_BODY)
    body_html = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, max_length=MAX_BODY)
    from_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    reply_to = EmailOrBlankField(required=False, allow_blank=True, max_length=EMAIL_MAX)
    priority = serializers.IntegerField(required=False, min_value=SMALLINT[0], max_value=SMALLINT[1])
    scheduled_at = serializers.DateTimeField(required=False, allow_null=True)

    def _refused(self, data: Mapping[str, Any]) -> dict[str, list[str]]:
        # A field of the task that cannot be edited (status, recipients...) says so.
        refused = super()._refused(data)
        task_fields = set(TaskSerializer().fields)
        return {name: ["cannot be changed"] if name in task_fields else why for name, why in refused.items()}


class TaskWaitSerializer(serializers.ModelSerializer):
    class Meta:
        model = TaskWaitMetric
        fields = ["queue_entry_time", "first_send_time", "wait_duration_seconds", "status"]


class TaskProgressSerializer(serializers.Serializer):
    pending = serializers.IntegerField()
    allocated = serializers.IntegerField()
    processing = serializers.IntegerField()
    sent = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    parked = serializers.IntegerField()
    suppressed = serializers.IntegerField(help_text="Recipients on a suppression list: skipped, never sent.")
    total = serializers.IntegerField()


class TaskSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField(help_text="Subtasks by status, and the total.")
    wait = serializers.SerializerMethodField(help_text="Queue entry, first send and the wait between them.")
    reply_to = EmailOrBlankField(read_only=True)

    class Meta:
        model = Task
        fields = [
            "id",
            "name",
            "subject",
            "body_text",
            "body_html",
            "from_name",
            "reply_to",
            "tag",
            "priority",
            "scheduled_at",
            "status",
            "failure_reason",
            "pause_reason",
            "recipients_total",
            "recipients_prepared",
            "progress",
            "wait",
            "created_at",
            "updated_at",
            "completed_at",
        ]
        read_only_fields = fields

    @extend_schema_field(TaskProgressSerializer)
    def get_progress(self, task: Task) -> dict[str, int]:
        return task_progress(task)

    @extend_schema_field(TaskWaitSerializer(allow_null=True))
    def get_wait(self, task: Task) -> dict[str, Any] | None:
        # Prefetched newest first by the view; one metric per queue entry.
        metrics = list(task.wait_metrics.all())
        return TaskWaitSerializer(metrics[0]).data if metrics else None


class TaskCancelResultSerializer(serializers.Serializer):
    cancelled = serializers.IntegerField(help_text="Pending subtasks cancelled by this call.")
    task = TaskSerializer()


class TaskRetryResultSerializer(serializers.Serializer):
    retried = serializers.IntegerField(help_text="Failed subtasks queued again by this call.")
    task = TaskSerializer()


class SendAttemptSerializer(serializers.ModelSerializer):
    service_name = serializers.CharField(source="service.name", read_only=True, allow_null=True, default=None)

    class Meta:
        model = SendAttempt
        fields = [
            "id",
            "service",
            "service_name",
            "started_at",
            "finished_at",
            "duration_ms",
            "outcome",
            "smtp_code",
            "smtp_reply",
            "bounce_class",
        ]
        read_only_fields = fields


class SubTaskSerializer(serializers.ModelSerializer):
    attempt_count = serializers.IntegerField(source="attempts", read_only=True)
    attempts = SendAttemptSerializer(source="attempts_log", many=True, read_only=True)

    class Meta:
        model = SubTask
        fields = [
            "id",
            "task",
            "contact",
            "recipient_email",
            "status",
            "priority",
            "service",
            "sender_email",
            "attempt_count",
            "attempts",
            "error_message",
            "next_attempt_at",
            "message_id",
            "sent_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields
