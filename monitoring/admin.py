from django.contrib import admin

from monitoring.models import TaskWaitMetric


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
