from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from common.admin.actions import Result, apply_to_each
from common.admin.readonly import ReadOnlyAdmin, all_fields
from monitoring.models import Alert
from monitoring.services.alerts import AlertManagerService
from queues.models import TaskWaitMetric, WorkerHeartbeat


@admin.register(TaskWaitMetric)
class TaskWaitMetricAdmin(admin.ModelAdmin):
    list_display = ("task", "user", "status", "queue_entry_time", "first_send_time", "wait_duration_seconds")
    list_filter = ("status", "queue_entry_time")
    search_fields = ("=task__id", "task__name", "user__username")
    list_select_related = ("task", "user")
    date_hierarchy = "queue_entry_time"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ("severity", "alert_type", "subject", "status", "occurrences", "first_seen_at", "last_seen_at")
    list_filter = ("status", "severity", "alert_type")
    search_fields = ("subject", "message")
    readonly_fields = all_fields(Alert)
    date_hierarchy = "last_seen_at"
    actions = ("acknowledge", "resolve")

    def has_manage_permission(self, request: HttpRequest) -> bool:
        # Acknowledging and resolving are the only changes an alert takes, so
        # they need the change permission although the form stays read-only.
        return request.user.has_perm("monitoring.change_alert")

    @admin.action(description="Acknowledge selected alerts", permissions=["manage"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        def apply(alert: Alert) -> Result:
            return "acknowledged" if AlertManagerService.acknowledge_alert(alert, user=request.user) else "unchanged"

        apply_to_each(
            self,
            request,
            queryset,
            apply,
            {
                "acknowledged": (messages.SUCCESS, "Acknowledged {count} {objects}."),
                "unchanged": (messages.INFO, "Not open (already acknowledged or resolved): {count} {objects}."),
            },
        )

    @admin.action(description="Resolve selected alerts", permissions=["manage"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        def apply(alert: Alert) -> Result:
            return "resolved" if AlertManagerService.resolve(alert) else "unchanged"

        apply_to_each(
            self,
            request,
            queryset,
            apply,
            {
                "resolved": (messages.SUCCESS, "Resolved {count} {objects}."),
                "unchanged": (messages.INFO, "Already resolved: {count} {objects}."),
            },
        )


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ("worker_id", "hostname", "pid", "last_seen_at", "stopped_at", "in_flight", "sent", "failed")
    list_filter = ("hostname",)
    search_fields = ("worker_id", "hostname")
    readonly_fields = all_fields(WorkerHeartbeat)
