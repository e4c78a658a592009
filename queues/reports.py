"""Figures about a run: sends per service and per user, throughput, first-send waits, suppressed recipients."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, Max, Min

from queues.models import SendAttempt, SubTask, TaskWaitMetric


@dataclass
class RunReport:
    since: dt.datetime
    sent_by_service: dict[str, int]
    sent_by_user: dict[str, int]
    failed: int
    retried: int
    sent: int
    suppressed: int  # recipients skipped as suppressed (no attempt, nothing sent)
    first_send: dt.datetime | None
    last_send: dt.datetime | None
    waits: list[tuple[str, str, float]]  # (user, task, seconds)

    @property
    def mails_per_second(self) -> float:
        if not self.sent or self.first_send is None or self.last_send is None:
            return 0.0
        span = (self.last_send - self.first_send).total_seconds()
        return self.sent / span if span > 0 else float(self.sent)


def run_report(*, since: dt.datetime) -> RunReport:
    attempts = SendAttempt.objects.filter(started_at__gte=since)
    sent = attempts.filter(outcome=SendAttempt.Outcome.SENT)
    by_service = dict(sent.values_list("service__name").annotate(n=Count("id")).order_by("service__name"))
    by_user = dict(
        sent.values_list("subtask__owner__username").annotate(n=Count("id")).order_by("subtask__owner__username")
    )
    span = sent.aggregate(first=Min("started_at"), last=Max("finished_at"))
    waits = [
        (m.user.username, m.task.name, (m.first_send_time - m.queue_entry_time).total_seconds())
        for m in TaskWaitMetric.objects.filter(first_send_time__gte=since).select_related("task", "user")
    ]
    return RunReport(
        since=since,
        sent_by_service=by_service,
        sent_by_user=by_user,
        failed=attempts.filter(outcome=SendAttempt.Outcome.PERMANENT).count(),
        retried=attempts.filter(outcome=SendAttempt.Outcome.TRANSIENT).count(),
        sent=sum(by_service.values()),
        suppressed=SubTask.objects.filter(status=SubTask.Status.SUPPRESSED, updated_at__gte=since).count(),
        first_send=span["first"],
        last_send=span["last"],
        waits=sorted(waits, key=lambda w: (w[0], w[1])),
    )


def format_report(report: RunReport) -> str:
    lines = [
        f"Sent {report.sent} mails at {report.mails_per_second:.0f} mails/s "
        f"({report.retried} transient failures, {report.failed} permanent; "
        f"{report.suppressed} suppressed recipients skipped)."
    ]
    lines.append("")
    lines.append(f"{'service':<24} {'sent':>8}")
    lines += [f"{name:<24} {n:>8}" for name, n in report.sent_by_service.items()]
    lines.append("")
    lines.append(f"{'user':<24} {'sent':>8}")
    lines += [f"{name:<24} {n:>8}" for name, n in report.sent_by_user.items()]
    if report.waits:
        lines.append("")
        lines.append(f"{'user':<12} {'task':<32} {'first-send wait':>16}")
        lines += [f"{user:<12} {task[:32]:<32} {seconds * 1000:>13.0f} ms" for user, task, seconds in report.waits]
    return "\n".join(lines)
