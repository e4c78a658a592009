import django_filters

from monitoring.models import Alert
from queues.models import TaskWaitMetric


class AlertFilter(django_filters.FilterSet):
    class Meta:
        model = Alert
        fields = ["status", "severity", "alert_type"]


class TaskWaitMetricFilter(django_filters.FilterSet):
    task = django_filters.UUIDFilter(field_name="task_id")

    class Meta:
        model = TaskWaitMetric
        fields = ["task", "status"]
