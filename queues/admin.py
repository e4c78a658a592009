from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from common.admin.actions import OneAtATimeDeleteAdmin, Result, apply_to_each
from common.admin.readonly import ReadOnlyAdmin, all_fields
from common.admin.saving import SaveChangedFieldsAdmin
from common.dbclock import db_now
from queues.admin_task_progress import SUMMARY_FIELDS, TaskProgressAdmin
from queues.api.serializers import EmailServiceSerializer
from queues.models import EmailService, SendAttempt, SubTask, Task
from queues.services import (
    EDITABLE_IN,
    RUNNABLE,
    TaskStateError,
    TaskValidationError,
    service_delete,
    service_reset_quota,
    service_set_enabled,
    task_cancel,
    task_delete,
    task_pause,
    task_progress,
    task_resume,
    task_retry_failed,
    task_update,
    task_update_check,
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

    def clean(self) -> dict:
        """The API's rules (EmailServiceSerializer) on what the operator entered or changed."""
        cleaned = super().clean()
        adding = self.instance._state.adding
        # The name's uniqueness is the model form's own check; is_enabled goes through service_set_enabled.
        skip = {"name", "is_enabled"}
        writable = {
            name for name, field in EmailServiceSerializer().fields.items() if not field.read_only and name not in skip
        }
        given = set(self.fields) if adding else set(self.changed_data)
        data = {name: cleaned[name] for name in given & writable if name in cleaned}
        serializer = EmailServiceSerializer(instance=None if adding else self.instance, data=data, partial=True)
        if not serializer.is_valid():
            for name, errors in serializer.errors.items():
                self.add_error(name if name in self.fields else None, [str(e) for e in errors])
        return cleaned


# Written by the scheduler as it sends (the quota through the "Reset quota" action).
SERVICE_STATISTICS = (
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


@admin.register(EmailService)
class EmailServiceAdmin(OneAtATimeDeleteAdmin, SaveChangedFieldsAdmin):
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
    readonly_fields = (*SERVICE_STATISTICS, "connection_grants")
    fieldsets = (
        (None, {"fields": ("name", "from_email", "is_enabled")}),
        ("Transport", {"fields": ("transport", "host", "port", "security", "timeout", "username", "password")}),
        ("E-mail backend", {"fields": ("backend_path", "backend_options"), "classes": ("collapse",)}),
        ("Limits", {"fields": ("sending_rate", "max_connections", "connection_grants", "daily_quota")}),
        ("Statistics", {"fields": SERVICE_STATISTICS}),
    )
    actions = ("enable_services", "disable_services", "reset_quota")

    @admin.display(description="Connection grants")
    def connection_grants(self, obj: EmailService) -> str:
        """Each scheduler process's share of max_connections (queues.scheduler.connections), as last renewed."""
        if obj.pk is None:
            return "-"
        now = db_now()
        grants = [
            f"{g.worker_id}: {g.connections} (wants {g.wanted}){'' if g.expires_at > now else ', expired'}"
            for g in obj.connection_grants.all()
        ]
        return "; ".join(grants) or "none"

    def save_model(self, request: HttpRequest, obj: EmailService, form: forms.ModelForm, change: bool) -> None:
        enable = "is_enabled" in form.changed_data and change
        if enable:
            # Through the service function: enabling also clears a failure back-off.
            form.changed_data.remove("is_enabled")
        super().save_model(request, obj, form, change)
        if enable:
            service_set_enabled(service=obj, enabled=obj.is_enabled)

    def get_deleted_objects(self, objs, request: HttpRequest) -> tuple[list, dict, set, list]:
        with_history = SubTask.objects.filter(service__in=objs).count()
        protected = [f"{with_history} subtasks went through it and its history is kept: disable the service instead"]
        return [str(o) for o in objs], {"email services": len(objs)}, set(), protected if with_history else []

    def delete_model(self, request: HttpRequest, obj: EmailService) -> None:
        service_delete(service=obj)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict | None = None) -> HttpResponse:
        parent = super().delete_view
        return refusable_delete(self, request, object_id, lambda: parent(request, object_id, extra_context))

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


def refusable_delete(
    modeladmin: admin.ModelAdmin, request: HttpRequest, object_id: str, delete_view: Callable[[], HttpResponse]
) -> HttpResponse:
    """The admin's delete page, where the service function may refuse: its reason shown, nothing deleted."""
    try:
        return delete_view()
    except TaskStateError as exc:  # raised inside the delete page's transaction, so it was rolled back
        modeladmin.message_user(request, f"Not deleted: {exc}", messages.ERROR)
        opts = modeladmin.model._meta
        return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[object_id]))


class TaskForm(forms.ModelForm):
    """Checked by task_update_check, the rules task_create and the API apply."""

    class Meta:
        model = Task
        exclude = ()

    def clean(self) -> dict:
        cleaned = super().clean()
        changes = {name: cleaned[name] for name in self.changed_data if name in EDITABLE_IN and name in cleaned}
        try:
            task_update_check(task=Task.objects.get(pk=self.instance.pk), changes=changes)
        except (TaskValidationError, TaskStateError) as exc:
            for name, errors in exc.errors.items():
                self.add_error(name if name in self.fields else None, errors)
            if not exc.errors:
                self.add_error(None, str(exc))
        return cleaned


@admin.register(Task)
class TaskAdmin(TaskProgressAdmin, OneAtATimeDeleteAdmin):
    list_display = (
        "name",
        "owner",
        "status",
        "recipients",
        "sent_of_total",
        "failed",
        "suppressed",
        "done",
        "priority",
        "scheduled_at",
        "created_at",
        "completed_at",
    )
    list_filter = ("status", "priority", "created_at")
    search_fields = ("name", "subject", "owner__username", "id")
    list_select_related = ("owner",)
    raw_id_fields = ("owner", "tag")
    # The status moves through the actions (and the scheduler), never by hand.
    readonly_fields = (
        "owner",
        "tag",
        "status",
        "recipients_total",
        "recipients_prepared",
        "progress",
        "failure_reason",
        "pause_reason",
        "created_at",
        "updated_at",
        "completed_at",
        *SUMMARY_FIELDS,
    )
    form = TaskForm
    date_hierarchy = "created_at"
    actions = ("pause_tasks", "resume_tasks", "cancel_tasks", "retry_failed_subtasks")

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A task is created with its recipients (task_create: subtasks, rotation,
        # wait metric), which the API does; an empty admin form cannot.
        return False

    @admin.display(description="recipients")
    def recipients(self, task: Task) -> str:
        if task.status == Task.Status.PREPARING:
            return f"{task.recipients_prepared:,} of {task.recipients_total:,} prepared"
        return f"{task.recipients_total:,}"

    @admin.display(description="progress")
    def progress(self, task: Task) -> str:
        """Subtasks by status (those with any), suppressed recipients included."""
        counts = task_progress(task)
        total = counts.pop("total")
        return ", ".join([f"{n:,} {status}" for status, n in counts.items() if n] + [f"{total:,} in all"])

    def save_model(self, request: HttpRequest, obj: Task, form: forms.ModelForm, change: bool) -> None:
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in EDITABLE_IN}
        try:
            task_update(task=obj, **changes)
        except (TaskValidationError, TaskStateError) as exc:
            # The task changed status between the form's check and this save (the scheduler or an action).
            self.message_user(request, f"Not saved: {exc}", messages.ERROR)

    def get_deleted_objects(self, objs, request: HttpRequest) -> tuple[list, dict, set, list]:
        # A summary: listing every subtask would not fit a page. The subtasks are
        # deleted by task_delete, not through their (read-only) admin.
        subtasks = SubTask.objects.filter(task__in=objs).count()
        summary = [f"{obj}: the task, its {subtasks} subtasks and their send history" for obj in objs]
        return summary, {"tasks": len(objs), "subtasks": subtasks}, set(), []

    def delete_model(self, request: HttpRequest, obj: Task) -> None:
        task_delete(task=obj)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict | None = None) -> HttpResponse:
        parent = super().delete_view
        return refusable_delete(self, request, object_id, lambda: parent(request, object_id, extra_context))

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

    list_display = ("started_at", "subtask", "service", "outcome", "smtp_code", "bounce_class", "duration", "worker_id")
    list_filter = ("outcome", "bounce_class", "service")
    search_fields = ("=subtask__id", "subtask__recipient_email", "worker_id", "smtp_reply")
    list_select_related = ("subtask", "service")
    readonly_fields = all_fields(SendAttempt)
    date_hierarchy = "started_at"
    show_full_result_count = False

    @admin.display(description="duration (ms)")
    def duration(self, attempt: SendAttempt) -> int:
        return attempt.duration_ms
