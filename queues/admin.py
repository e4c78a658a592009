from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from edm.admin_actions import Result, apply_to_each
from edm.admin_readonly import ReadOnlyAdmin, all_fields
from edm.admin_saving import SaveChangedFieldsAdmin
from queues.models import EmailService, SendAttempt, SubTask, Task
from queues.services import (
    RUNNABLE,
    TaskStateError,
    service_reset_quota,
    service_set_enabled,
    task_cancel,
    task_pause,
    task_resume,
    task_retry_failed,
)


class EmailServiceForm(forms.ModelForm):
    """Secrets are write-only: the form never renders the stored values."""

    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current password.",
    )
    backend_options = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Backend keyword arguments (API keys...). Leave empty to keep the current options.",
    )

    class Meta:
        model = EmailService
        exclude = ()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.initial.pop("password", None)
        self.initial.pop("backend_options", None)

    def clean_password(self) -> str:
        value = self.cleaned_data.get("password")
        return value if value else self.instance.password

    def clean_backend_options(self) -> dict:
        value = self.cleaned_data.get("backend_options")
        return value if value not in (None, "") else (self.instance.backend_options or {})


@admin.register(EmailService)
class EmailServiceAdmin(SaveChangedFieldsAdmin):
    form = EmailServiceForm
    list_display = (
        "name",
        "transport",
        "from_email",
        "is_enabled",
        "used_quota",
        "daily_quota",
        "sending_rate",
        "next_available_at",
        "total_sent",
        "success_rate",
        "avg_response_time",
    )
    list_filter = ("is_enabled", "transport", "security")
    search_fields = ("name", "host", "from_email", "username")
    # Written by the scheduler as it sends (the quota through the "Reset quota" action).
    readonly_fields = (
        "used_quota",
        "quota_date",
        "last_sent_at",
        "next_available_at",
        "total_sent",
        "total_failed",
        "success_rate",
        "avg_response_time",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "from_email", "is_enabled")}),
        ("Transport", {"fields": ("transport", "host", "port", "security", "timeout", "username", "password")}),
        ("E-mail backend", {"fields": ("backend_path", "backend_options"), "classes": ("collapse",)}),
        ("Limits", {"fields": ("sending_rate", "daily_quota")}),
        ("Statistics", {"fields": readonly_fields}),
    )
    actions = ("enable_services", "disable_services", "reset_quota")

    @admin.action(description="Enable selected services", permissions=["change"])
    def enable_services(self, request: HttpRequest, queryset: QuerySet[EmailService]) -> None:
        self._set_enabled(request, queryset, enabled=True)

    @admin.action(description="Disable selected services", permissions=["change"])
    def disable_services(self, request: HttpRequest, queryset: QuerySet[EmailService]) -> None:
        self._set_enabled(request, queryset, enabled=False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[EmailService], *, enabled: bool) -> None:
        verb = "Enabled" if enabled else "Disabled"

        def apply(service: EmailService) -> Result:
            return "changed" if service_set_enabled(service=service, enabled=enabled) else "unchanged"

        apply_to_each(
            self,
            request,
            queryset,
            apply,
            {
                "changed": (messages.SUCCESS, verb + " {count} {objects}."),
                "unchanged": (messages.INFO, "Already " + verb.lower() + ": {count} {objects}."),
            },
        )

    @admin.action(description="Reset the used quota of selected services", permissions=["change"])
    def reset_quota(self, request: HttpRequest, queryset: QuerySet[EmailService]) -> None:
        def apply(service: EmailService) -> Result:
            service_reset_quota(service=service)
            return "reset"

        apply_to_each(
            self, request, queryset, apply, {"reset": (messages.SUCCESS, "Reset the used quota of {count} {objects}.")}
        )


@admin.register(Task)
class TaskAdmin(SaveChangedFieldsAdmin):
    list_display = ("name", "owner", "status", "priority", "scheduled_at", "created_at", "completed_at")
    list_filter = ("status", "priority", "created_at")
    search_fields = ("name", "subject", "owner__username", "id")
    list_select_related = ("owner",)
    raw_id_fields = ("owner", "tag")
    # The status moves through the actions (and the scheduler), never by hand.
    readonly_fields = ("owner", "tag", "status", "created_at", "updated_at", "completed_at")
    date_hierarchy = "created_at"
    actions = ("pause_tasks", "resume_tasks", "cancel_tasks", "retry_failed_subtasks")

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A task is created with its recipients (task_create: subtasks, rotation,
        # wait metric), which the API does; an empty admin form cannot.
        return False

    @admin.action(description="Pause selected tasks", permissions=["change"])
    def pause_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        def apply(task: Task) -> Result:
            # The status read just before only words the message; the service decides under its row lock.
            was_paused = task.status == Task.Status.PAUSED
            task_pause(task=task)
            return "unchanged" if was_paused else "paused"

        self._run(request, queryset, apply, ("paused", "Paused {count} {objects}."), unchanged="Already paused")

    @admin.action(description="Resume selected tasks", permissions=["change"])
    def resume_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        def apply(task: Task) -> Result:
            was_running = task.status in RUNNABLE
            task_resume(task=task)
            return "unchanged" if was_running else "resumed"

        self._run(request, queryset, apply, ("resumed", "Resumed {count} {objects}."), unchanged="Already running")

    @admin.action(description="Cancel selected tasks", permissions=["change"])
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        def apply(task: Task) -> Result:
            was_cancelled = task.status == Task.Status.CANCELLED
            cancelled = task_cancel(task=task)
            return ("unchanged", 0) if was_cancelled else ("cancelled", cancelled)

        self._run(
            request,
            queryset,
            apply,
            ("cancelled", "Cancelled {count} {objects} and their {total} pending subtasks."),
            unchanged="Already cancelled",
        )

    @admin.action(description="Retry failed subtasks of selected tasks", permissions=["change"])
    def retry_failed_subtasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        def apply(task: Task) -> Result:
            retried = task_retry_failed(task=task)
            return ("retried", retried) if retried else "unchanged"

        self._run(
            request,
            queryset,
            apply,
            ("retried", "Queued {total} failed subtasks of {count} {objects} again."),
            unchanged="No failed subtasks",
        )

    def _run(
        self,
        request: HttpRequest,
        queryset: QuerySet[Task],
        apply: Callable[[Task], Result],
        done: tuple[str, str],
        *,
        unchanged: str,
    ) -> None:
        """Report the action's outcome ``done[0]`` with text ``done[1]``; a refused task gets a warning."""
        reports = {
            done[0]: (messages.SUCCESS, done[1]),
            "unchanged": (messages.INFO, unchanged + ": {count} {objects}."),
        }
        apply_to_each(self, request, queryset, apply, reports, refused=(TaskStateError,))


@admin.register(SubTask)
class SubTaskAdmin(ReadOnlyAdmin):
    """Subtasks change through the scheduler and the task actions (retry failed, cancel), not by hand."""

    list_display = ("recipient_email", "task", "status", "service", "attempts", "sent_at", "updated_at")
    list_filter = ("status", "service")
    search_fields = ("recipient_email", "message_id", "=task__id")
    list_select_related = ("task", "service")
    raw_id_fields = ("task", "owner", "contact", "service")
    readonly_fields = ("message_id", "claim_token", "claimed_by", "claimed_at", "created_at", "updated_at")
    # Counting millions of rows on every page load is what makes big admins slow.
    show_full_result_count = False


@admin.register(SendAttempt)
class SendAttemptAdmin(ReadOnlyAdmin):
    """Delivery history: written by the scheduler only, so it is read-only here."""

    list_display = ("started_at", "subtask", "service", "outcome", "smtp_code", "duration", "worker_id")
    list_filter = ("outcome", "service")
    search_fields = ("=subtask__id", "subtask__recipient_email", "worker_id", "smtp_reply")
    list_select_related = ("subtask", "service")
    readonly_fields = all_fields(SendAttempt)
    date_hierarchy = "started_at"
    show_full_result_count = False

    @admin.display(description="duration (ms)")
    def duration(self, attempt: SendAttempt) -> int:
        return attempt.duration_ms
