from django.urls import path
from rest_framework.routers import SimpleRouter

from monitoring.api.views import AlertViewSet, PerformanceMetricsView, SystemHealthView, TaskWaitMetricViewSet

router = SimpleRouter()
router.register("monitoring/alerts", AlertViewSet, basename="alert")
router.register("monitoring/task-wait-metrics", TaskWaitMetricViewSet, basename="task-wait-metric")

urlpatterns = [
    path("monitoring/system-health", SystemHealthView.as_view(), name="system-health"),
    path("monitoring/performance-metrics", PerformanceMetricsView.as_view(), name="performance-metrics"),
    *router.urls,
]
