from django.urls import path
from rest_framework.routers import SimpleRouter

from monitoring.api.views import (
    AlertViewSet,
    PerformanceMetricsView,
    QueueStateView,
    ServiceUsageView,
    SystemHealthView,
    TaskWaitMetricViewSet,
)

router = SimpleRouter()
router.register("monitoring/alerts", AlertViewSet, basename="alert")
router.register("monitoring/task-wait-metrics", TaskWaitMetricViewSet, basename="task-wait-metric")

urlpatterns = [
    path("monitoring/system-health", SystemHealthView.as_view(), name="system-health"),
    path("monitoring/performance-metrics", PerformanceMetricsView.as_view(), name="performance-metrics"),
    path("monitoring/services", ServiceUsageView.as_view(), name="monitoring-services"),
    path("monitoring/queue", QueueStateView.as_view(), name="monitoring-queue"),
    *router.urls,
]
