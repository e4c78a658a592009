from django import forms
from django.contrib import admin

from queues.models import EmailService, SubTask, Task


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
class EmailServiceAdmin(admin.ModelAdmin):
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
    readonly_fields = (
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
        ("Limits", {"fields": ("sending_rate", "daily_quota", "used_quota", "quota_date")}),
        ("Statistics", {"fields": readonly_fields}),
    )


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "status", "priority", "scheduled_at", "created_at", "completed_at")
    list_filter = ("status", "priority", "created_at")
    search_fields = ("name", "subject", "owner__username", "id")
    list_select_related = ("owner",)
    raw_id_fields = ("owner", "tag")
    readonly_fields = ("created_at", "updated_at", "completed_at")
    date_hierarchy = "created_at"


@admin.register(SubTask)
class SubTaskAdmin(admin.ModelAdmin):
    list_display = ("recipient_email", "task", "status", "service", "attempts", "sent_at", "updated_at")
    list_filter = ("status", "service")
    search_fields = ("recipient_email", "message_id", "=task__id")
    list_select_related = ("task", "service")
    raw_id_fields = ("task", "owner", "contact", "service")
    readonly_fields = ("message_id", "claim_token", "claimed_by", "claimed_at", "created_at", "updated_at")
    # Counting millions of rows on every page load is what makes big admins slow.
    show_full_result_count = False
