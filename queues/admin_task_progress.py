"""The task admin's progress: list columns and the change page's subtask summary.

The list's counts are correlated subqueries on idx_subtasks_task_status
(task_id, status), one per column, in the page's own query: PostgreSQL
evaluates them for the page's rows only (after the LIMIT), so a page costs
the same number of queries whatever its size and however many subtasks
the other tasks have (a join with GROUP BY would aggregate them all).
"""

from __future__ import annotations

import datetime as dt

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from queues.models import SubTask, Task

LAST_ERRORS = 10
SUMMARY_FIELDS = ("subtasks_by_status", "subtasks_by_service", "last_errors")
_COUNTS = {
    "progress_total": Q(),
    "progress_sent": Q(status=SubTask.Status.SENT),
    "progress_failed": Q(status=SubTask.Status.FAILED),
    "progress_suppressed": Q(status=SubTask.Status.SUPPRESSED),
    "progress_finished": Q(status__in=SubTask.TERMINAL),
}


def _subtask_count(condition: Q) -> Coalesce:
    counted = SubTask.objects.filter(condition, task=OuterRef("pk")).order_by().values("task").annotate(n=Count("*"))
    return Coalesce(Subquery(counted.values("n"), output_field=IntegerField()), 0)


def tasks_with_progress(queryset: QuerySet[Task]) -> QuerySet[Task]:
    """The tasks with their subtask counts as ``progress_total``, ``progress_sent`` ... (see _COUNTS)."""
    return queryset.annotate(**{name: _subtask_count(condition) for name, condition in _COUNTS.items()})


def _table(head: tuple[str, ...], rows: list[tuple], empty: str) -> str:
    if not rows:
        return empty
    cells = format_html_join("", "<th>{}</th>", ((h,) for h in head))
    body = format_html_join("", "<tr>" + "<td>{}</td>" * len(head) + "</tr>", rows)
    return format_html(
        '<table class="subtask-summary"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', cells, body
    )


def _when(moment: dt.datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")


class TaskProgressAdmin(admin.ModelAdmin):
    """Progress columns for the task list and a "Subtasks" section for the change page."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Task]:
        return tasks_with_progress(super().get_queryset(request))

    def get_fieldsets(self, request: HttpRequest, obj: Task | None = None) -> list:
        (name, options), *rest = super().get_fieldsets(request, obj)
        fields = [field for field in options["fields"] if field not in SUMMARY_FIELDS]
        return [(name, {**options, "fields": fields}), *rest, ("Subtasks", {"fields": SUMMARY_FIELDS})]

    @admin.display(description="sent", ordering="progress_sent")
    def sent_of_total(self, task: Task) -> str:
        return f"{task.progress_sent:,} / {task.progress_total:,}"

    @admin.display(description="failed", ordering="progress_failed")
    def failed(self, task: Task) -> str:
        return f"{task.progress_failed:,}"

    @admin.display(description="suppressed", ordering="progress_suppressed")
    def suppressed(self, task: Task) -> str:
        return f"{task.progress_suppressed:,}"

    @admin.display(description="done")
    def done(self, task: Task) -> str:
        """Subtasks in a final state (sent, failed, cancelled, suppressed), of all."""
        if not task.progress_total:
            return "-"
        return f"{100 * task.progress_finished // task.progress_total}%"

    @admin.display(description="by status")
    def subtasks_by_status(self, task: Task) -> str:
        counts = dict(task.subtasks.order_by().values_list("status").annotate(n=Count("pk")))
        rows = [(label, f"{counts[value]:,}") for value, label in SubTask.Status.choices if counts.get(value)]
        return _table(("status", "subtasks"), rows, "no subtasks")

    @admin.display(description="by service")
    def subtasks_by_service(self, task: Task) -> str:
        """Sent and failed subtasks by the service that last had them (none: failed before any send)."""
        counts = (
            task.subtasks.filter(status__in=[SubTask.Status.SENT, SubTask.Status.FAILED])
            .order_by("service__name")
            .values_list("service__name")
            .annotate(
                sent=Count("pk", filter=Q(status=SubTask.Status.SENT)),
                failed=Count("pk", filter=Q(status=SubTask.Status.FAILED)),
            )
        )
        rows = [(name or "(none)", f"{sent:,}", f"{failed:,}") for name, sent, failed in counts]
        return _table(("service", "sent", "failed"), rows, "nothing sent or failed yet")

    @admin.display(description="last errors")
    def last_errors(self, task: Task) -> str:
        failed = task.subtasks.filter(status=SubTask.Status.FAILED).order_by("-updated_at", "-pk")[:LAST_ERRORS]
        rows = [
            (_when(s.updated_at), s.recipient_email, s.service.name if s.service else "", s.error_message)
            for s in failed.select_related("service")
        ]
        return _table(("when", "recipient", "service", "error"), rows, "no failed subtasks")
