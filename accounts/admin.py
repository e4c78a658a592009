from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from accounts.models import User
from common.admin.actions import OneAtATimeDeleteAdmin, Result, apply_to_each
from queues.admin import refusable_delete
from queues.services import TaskStateError, user_erase


@admin.register(User)
class UserAdmin(OneAtATimeDeleteAdmin, DjangoUserAdmin):
    # Bulk delete is replaced by "Erase": a user's tasks may have mail in flight, which user_erase checks.
    list_display = ("username", "email", "is_staff", "is_active", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active")
    search_fields = ("username", "email", "first_name", "last_name")
    actions = ("erase_users",)

    @admin.action(description="Erase selected users and all their data", permissions=["delete"])
    def erase_users(self, request: HttpRequest, queryset: QuerySet[User]) -> TemplateResponse | None:
        if request.POST.get("confirm") != "yes":
            return TemplateResponse(
                request,
                "admin/accounts/user/erase_confirmation.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Erase users and all their data?",
                    "opts": self.model._meta,
                    "summaries": self._summaries(queryset),
                    "selected": queryset.values_list("pk", flat=True),
                    "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                },
            )

        def apply(user: User) -> Result:
            user_erase(user=user)
            return "erased"

        apply_to_each(
            self,
            request,
            queryset,
            apply,
            {"erased": (messages.SUCCESS, "Erased {count} {objects} and all their data.")},
            refused=(TaskStateError,),
        )
        return None

    @staticmethod
    def _summaries(queryset: QuerySet[User]) -> list[str]:
        # Separate counts: one query joining tasks, subtasks and contacts would multiply them.
        summaries = []
        for user in queryset:
            tasks = user.tasks.count()
            subtasks = user.subtasks.count()
            contacts = user.contacts.aggregate(n=Count("pk"))["n"]
            summaries.append(f"{user}: {tasks} tasks, {subtasks} subtasks, {contacts} contacts")
        return summaries

    def get_deleted_objects(self, objs, request: HttpRequest) -> tuple[list, dict, set, list]:
        # What user_erase deletes, counted: listing every subtask would not fit a page.
        return self._summaries(objs), {"users": len(objs)}, set(), []

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        user_erase(user=obj)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict | None = None) -> HttpResponse:
        parent = super().delete_view
        return refusable_delete(self, request, object_id, lambda: parent(request, object_id, extra_context))
