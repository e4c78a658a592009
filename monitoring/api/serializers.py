"""Monitoring API shapes: alerts, task wait metrics, health and performance series."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from common.api.filters import NonEmptyQueryMixin
from monitoring.models import Alert
from monitoring.services.performance import BUCKETS
from queues.models import TaskWaitMetric

DEFAULT_WINDOW = dt.timedelta(hours=1)


class AlertSerializer(serializers.ModelSerializer):
    acknowledged_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Alert
        fields = [
            "id",
            "alert_type",
            "severity",
            "subject",
            "message",
            "details",
            "status",
            "occurrences",
            "first_seen_at",
            "last_seen_at",
            "acknowledged_at",
            "acknowledged_by",
            "resolved_at",
        ]
        read_only_fields = fields


class TaskWaitMetricSerializer(serializers.ModelSerializer):
    task = serializers.UUIDField(source="task_id", read_only=True)
    user = serializers.UUIDField(source="user_id", read_only=True)
    # A plain string in the schema: the same choice set in the tasks API would
    # otherwise get a hashed enum name (needs an ENUM_NAME_OVERRIDES entry).
    status = serializers.CharField(read_only=True, help_text="waiting, or processing once the first mail was sent.")

    class Meta:
        model = TaskWaitMetric
        fields = [
            "id",
            "task",
            "user",
            "queue_entry_time",
            "first_send_time",
            "wait_duration_seconds",
            "status",
            "created_at",
        ]
        read_only_fields = fields


class HealthStatusSerializer(serializers.Serializer):
    # A plain string (not an enum) in the schema: "status" names several other choice sets.
    status = serializers.CharField(help_text="healthy, degraded or unhealthy.")


class HealthSerializer(HealthStatusSerializer):
    checks = serializers.DictField(
        child=serializers.DictField(),
        required=False,
        help_text="Staff only: database, cache, broker, schedulers, ready_services, backlog, "
        "oldest_waiting_task, open_alerts; each with a status (ok, degraded, unhealthy, skipped) and its figures.",
    )


class PerformanceQuerySerializer(NonEmptyQueryMixin, serializers.Serializer):
    since = serializers.DateTimeField(required=False, help_text="Start of the range (default: an hour before until).")
    until = serializers.DateTimeField(required=False, help_text="End of the range (default: now).")
    bucket = serializers.ChoiceField(choices=list(BUCKETS), default="minute")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        until = attrs.get("until") or timezone.now()
        since = attrs.get("since") or until - DEFAULT_WINDOW
        if since >= until:
            raise serializers.ValidationError({"since": ["must be before until"]})
        return {**attrs, "since": since, "until": until}


class PerformancePointSerializer(serializers.Serializer):
    time = serializers.CharField(help_text="Bucket start, ISO-8601, UTC.")
    sent = serializers.IntegerField(help_text="Delivered send attempts.")
    failed = serializers.IntegerField(help_text="Failed send attempts (transient or permanent).")
    success_rate = serializers.FloatField(allow_null=True, help_text="Percent; null without attempts.")
    wait_p50 = serializers.FloatField(allow_null=True, help_text="Median first-send wait (s) of tasks first sent here.")
    wait_p95 = serializers.FloatField(allow_null=True, help_text="95th percentile first-send wait (s).")


class PerformanceSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    bucket = serializers.CharField()
    data = PerformancePointSerializer(many=True)


class ServiceUsageSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    is_enabled = serializers.BooleanField()
    daily_quota = serializers.IntegerField()
    quota_used = serializers.IntegerField(help_text="Sent in the current quota day.")
    quota_left = serializers.IntegerField()
    sent = serializers.IntegerField(help_text="Delivered attempts, ever.")
    failed = serializers.IntegerField(help_text="Failed attempts, ever.")
    success_rate = serializers.FloatField(help_text="Moving success rate, percent.")
    avg_response_ms = serializers.IntegerField()
    last_sent_at = serializers.DateTimeField(allow_null=True)
    next_available_at = serializers.DateTimeField(allow_null=True)
    backoff_until = serializers.DateTimeField(allow_null=True)
    ready = serializers.BooleanField()
    not_ready_reason = serializers.CharField(
        allow_null=True, help_text="disabled, quota, backed_off or rate; null when ready."
    )


class ServiceUsageListSerializer(serializers.Serializer):
    data = ServiceUsageSerializer(many=True)


class QueueDepthPointSerializer(serializers.Serializer):
    time = serializers.CharField()
    pending = serializers.IntegerField()
    in_flight = serializers.IntegerField()
    ready_services = serializers.IntegerField()
    live_schedulers = serializers.IntegerField()


class OldestWaitingTaskSerializer(serializers.Serializer):
    task_id = serializers.UUIDField()
    task_name = serializers.CharField()
    user_id = serializers.UUIDField()
    queue_entry_time = serializers.DateTimeField()
    wait_seconds = serializers.IntegerField()


class QueueQuerySerializer(NonEmptyQueryMixin, serializers.Serializer):
    since = serializers.DateTimeField(required=False, help_text="Start of the series (default: an hour ago).")


class QueueStateSerializer(serializers.Serializer):
    depth = serializers.DictField(child=serializers.IntegerField(), help_text="Subtasks per queue status.")
    backlog = serializers.DictField(child=serializers.IntegerField(), help_text="pending, and due now.")
    ready_services = serializers.IntegerField()
    live_schedulers = serializers.ListField(child=serializers.CharField(), help_text="Worker ids.")
    oldest_waiting_task = OldestWaitingTaskSerializer(allow_null=True)
    series = QueueDepthPointSerializer(many=True, help_text="One sample a minute (sample_queue sweep).")
