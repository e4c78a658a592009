"""Monitoring over HTTP: health (anyone), performance and alerts (staff), task wait metrics (own, or all for staff)."""

from __future__ import annotations

import datetime as dt

from django.db import DatabaseError
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api.schema import conflict
from monitoring.api.filters import AlertFilter, TaskWaitMetricFilter
from monitoring.api.serializers import (
    AlertSerializer,
    HealthSerializer,
    PerformanceQuerySerializer,
    PerformanceSerializer,
    QueueQuerySerializer,
    QueueStateSerializer,
    ServiceUsageListSerializer,
    TaskWaitMetricSerializer,
)
from monitoring.models import Alert
from monitoring.services.alerts import AlertManagerService
from monitoring.services.health import UNHEALTHY, system_health
from monitoring.services.performance import performance_series, queue_depth_series
from monitoring.services.system import SystemMonitorService
from queues.models import TaskWaitMetric


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The alert's state does not allow this."


class SystemHealthView(APIView):
    """Overall status for anyone (load balancers, uptime checks); the checks behind it for staff."""

    permission_classes = [AllowAny]

    def perform_authentication(self, request: Request) -> None:
        # Authentication reads the database; it is done (or skipped) in get()
        # so that a dead database still yields an answer instead of a 500.
        pass

    @extend_schema(
        summary="System health",
        description="200 when healthy or degraded, 503 when unhealthy (the database does not answer). "
        "Staff also get the per-check detail in `checks`.",
        responses={200: HealthSerializer, 503: HealthSerializer},
    )
    def get(self, request: Request) -> Response:
        health = system_health()
        code = status.HTTP_503_SERVICE_UNAVAILABLE if health["status"] == UNHEALTHY else status.HTTP_200_OK
        database_up = health["checks"]["database"]["status"] != UNHEALTHY
        body = health if database_up and _is_staff(request) else {"status": health["status"]}
        response = Response(body, status=code)
        response["Cache-Control"] = "no-store"
        return response


def _is_staff(request: Request) -> bool:
    try:
        return bool(request.user and request.user.is_staff)
    except DatabaseError:
        return False


class PerformanceMetricsView(APIView):
    """Throughput, success rate and first-send wait per minute or hour (staff)."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="Performance over time",
        parameters=[
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="Range start (default: 1 hour before until)"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="Range end (default: now)"),
            OpenApiParameter("bucket", OpenApiTypes.STR, enum=["minute", "hour"], description="Default minute"),
        ],
        responses={200: PerformanceSerializer, 400: OpenApiResponse(description="Invalid parameters")},
    )
    def get(self, request: Request) -> Response:
        query = PerformanceQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        try:
            data = performance_series(since=params["since"], until=params["until"], bucket=params["bucket"])
        except ValueError as exc:
            raise serializers.ValidationError({"detail": [str(exc)]}) from None
        return Response({"since": params["since"], "until": params["until"], "bucket": params["bucket"], "data": data})


class ServiceUsageView(APIView):
    """Every sending service's quota, sends, success rate and readiness (staff)."""

    permission_classes = [IsAdminUser]

    @extend_schema(summary="Per-service usage and readiness", responses={200: ServiceUsageListSerializer})
    def get(self, request: Request) -> Response:
        return Response({"data": SystemMonitorService.service_usage()})


class QueueStateView(APIView):
    """The queue now (depth, backlog, ready services, live schedulers, oldest wait) and its recent samples (staff)."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="Queue state and queue-depth series",
        parameters=[
            OpenApiParameter(
                "since",
                OpenApiTypes.DATETIME,
                description="Series start (default: 1 h ago; a future moment: no samples)",
            )
        ],
        responses={200: QueueStateSerializer, 400: OpenApiResponse(description="Invalid parameters")},
    )
    def get(self, request: Request) -> Response:
        query = QueueQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        now = timezone.now()
        since = query.validated_data.get("since") or now - dt.timedelta(hours=1)
        system = SystemMonitorService
        return Response(
            {
                "depth": system.queue_depth(),
                "backlog": system.backlog(now=now),
                "ready_services": system.ready_services(now=now),
                "live_schedulers": [beat.worker_id for beat in system.live_schedulers(now=now)],
                "oldest_waiting_task": system.oldest_waiting_task(now=now),
                "series": queue_depth_series(since=since, until=now) if since < now else [],
            }
        )


_ALERT_ACTION = {
    "request": None,
    "responses": {200: AlertSerializer, 409: conflict("The alert's status does not allow it.")},
}


@extend_schema_view(
    list=extend_schema(summary="Alerts, most recently seen first (filter by status, severity, alert_type)"),
    retrieve=extend_schema(summary="One alert"),
)
class AlertViewSet(viewsets.ReadOnlyModelViewSet):
    """Alerts raised by the scheduler and the sweeps: staff only."""

    permission_classes = [IsAdminUser]
    queryset = Alert.objects.select_related("acknowledged_by")
    serializer_class = AlertSerializer
    filterset_class = AlertFilter
    ordering_fields = ["last_seen_at", "first_seen_at", "severity", "occurrences"]
    ordering = ["-last_seen_at"]

    @extend_schema(summary="Acknowledge an open alert (someone is on it)", **_ALERT_ACTION)
    @action(detail=True, methods=["post"], filter_backends=[], pagination_class=None)
    def acknowledge(self, request: Request, pk: str | None = None) -> Response:
        alert = self.get_object()
        if not AlertManagerService.acknowledge_alert(alert, user=request.user):
            raise Conflict(f"only an open alert can be acknowledged; this one is {_current_status(alert)}")
        alert.refresh_from_db()
        return Response(AlertSerializer(alert).data)

    @extend_schema(summary="Resolve an alert", **_ALERT_ACTION)
    @action(detail=True, methods=["post"], filter_backends=[], pagination_class=None)
    def resolve(self, request: Request, pk: str | None = None) -> Response:
        alert = self.get_object()
        if not AlertManagerService.resolve(alert):
            raise Conflict("the alert is already resolved")
        alert.refresh_from_db()
        return Response(AlertSerializer(alert).data)


def _current_status(alert: Alert) -> str:
    return Alert.objects.filter(pk=alert.pk).values_list("status", flat=True).first() or "gone"


@extend_schema_view(
    list=extend_schema(summary="First-send waits of your tasks (staff: of every task); filter by task, status"),
    retrieve=extend_schema(summary="One first-send wait metric"),
)
class TaskWaitMetricViewSet(viewsets.ReadOnlyModelViewSet):
    """How long tasks waited for their first send. Users see their own; staff see everyone's."""

    serializer_class = TaskWaitMetricSerializer
    filterset_class = TaskWaitMetricFilter
    ordering_fields = ["queue_entry_time", "first_send_time", "wait_duration_seconds"]
    ordering = ["-queue_entry_time"]

    def get_queryset(self) -> QuerySet[TaskWaitMetric]:
        metrics = TaskWaitMetric.objects.all()
        if getattr(self, "swagger_fake_view", False):
            return metrics.none()
        if self.request.user.is_staff:
            return metrics
        return metrics.filter(user_id=self.request.user.pk)
