"""SystemMonitorService: the queue and the sending services as an operator sees them now.

Every figure is read from the database at call time (no process-local
state), so any web process, the admin dashboard and the Prometheus collector
give the same answer. The queries are chosen to hit the partial indexes that
the scheduler already needs: pending subtasks (``idx_subtasks_pending_priority``),
claims under way (``idx_subtasks_in_flight``) and ready services
(``idx_email_services_next_available_enabled``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from config.services import get_config_by_category
from queues.models import EmailService, SubTask, Task, TaskWaitMetric, WorkerHeartbeat
from queues.scheduler.claim import quota_day

# Statuses whose subtasks are still queue work; sent/failed/cancelled rows are
# history and are never counted here (counting them would scan the whole table).
QUEUE_STATUSES = (
    SubTask.Status.PENDING,
    SubTask.Status.ALLOCATED,
    SubTask.Status.PROCESSING,
    SubTask.Status.PARKED,
)
RUNNABLE_TASKS = (Task.Status.PENDING, Task.Status.SENDING)


class SystemMonitorService:
    @staticmethod
    def queue_depth() -> dict[str, int]:
        """Subtasks per queue status (pending, allocated, processing, parked), zeros included."""
        depth = dict.fromkeys((s.value for s in QUEUE_STATUSES), 0)
        depth[SubTask.Status.PENDING] = SubTask.objects.filter(status=SubTask.Status.PENDING).count()
        claimed = (
            SubTask.objects.filter(status__in=SubTask.CLAIMED).values_list("status").annotate(n=Count("id")).order_by()
        )
        for status, n in claimed:
            depth[status] = n
        depth[SubTask.Status.PARKED] = SubTask.objects.filter(status=SubTask.Status.PARKED).count()
        return depth

    @staticmethod
    def ready_query(now: dt.datetime) -> Q:
        """The scheduler's ready condition evaluated at ``now`` (the claim itself uses the database clock)."""
        today = quota_day(now, get_config_by_category("queue")["quota_timezone"])
        return (
            Q(is_enabled=True)
            & (Q(next_available_at__isnull=True) | Q(next_available_at__lte=now))
            & (Q(used_quota__lt=F("daily_quota")) | ~Q(quota_date=today))
            & Q(daily_quota__gt=0)
        )

    @classmethod
    def ready_services(cls, *, now: dt.datetime | None = None) -> int:
        """How many services could be claimed right now."""
        now = now or timezone.now()
        return EmailService.objects.filter(cls.ready_query(now)).count()

    @staticmethod
    def live_schedulers(*, now: dt.datetime | None = None) -> list[WorkerHeartbeat]:
        """Scheduler processes that are running: seen within recovery.worker_dead_seconds and not stopped.

        The same horizon recovery uses to declare a worker dead, so "live" here
        and "dead" there never disagree.
        """
        now = now or timezone.now()
        horizon = now - dt.timedelta(seconds=get_config_by_category("recovery")["worker_dead_seconds"])
        return list(WorkerHeartbeat.objects.filter(stopped_at__isnull=True, last_seen_at__gte=horizon))

    @staticmethod
    def stalled_schedulers(*, now: dt.datetime | None = None) -> list[WorkerHeartbeat]:
        """Running scheduler processes whose recorder or claim loop is stuck (they still report, not as live).

        Still reporting: a heartbeat written within recovery.worker_dead_seconds.
        """
        now = now or timezone.now()
        horizon = now - dt.timedelta(seconds=get_config_by_category("recovery")["worker_dead_seconds"])
        reporting = WorkerHeartbeat.objects.filter(stopped_at__isnull=True, reported_at__gte=horizon)
        return list(reporting.filter(stalled_since__isnull=False))

    @classmethod
    def service_usage(cls, *, now: dt.datetime | None = None) -> list[dict[str, Any]]:
        """One dict per service: quota used and left, sends, success rate, and whether it is ready (or why not)."""
        now = now or timezone.now()
        today = quota_day(now, get_config_by_category("queue")["quota_timezone"])
        usage = []
        for service in EmailService.objects.order_by("name"):
            # used_quota counts the day in quota_date; an older day no longer counts.
            used = service.used_quota if service.quota_date == today else 0
            reason = cls._not_ready_reason(service, used, now)
            usage.append(
                {
                    "id": str(service.pk),
                    "name": service.name,
                    "is_enabled": service.is_enabled,
                    "daily_quota": service.daily_quota,
                    "quota_used": used,
                    "quota_left": max(0, service.daily_quota - used),
                    "sent": service.total_sent,
                    "failed": service.total_failed,
                    "success_rate": float(service.success_rate),
                    "avg_response_ms": service.avg_response_time,
                    "last_sent_at": service.last_sent_at,
                    "next_available_at": service.next_available_at,
                    "backoff_until": service.backoff_until,
                    "ready": reason is None,
                    "not_ready_reason": reason,
                }
            )
        return usage

    @staticmethod
    def _not_ready_reason(service: EmailService, used: int, now: dt.datetime) -> str | None:
        """disabled, quota, backed_off or rate; None when the service is ready."""
        if not service.is_enabled:
            return "disabled"
        if service.daily_quota <= 0 or used >= service.daily_quota:
            return "quota"
        if service.backoff_until is not None and service.backoff_until > now:
            return "backed_off"
        if service.next_available_at is not None and service.next_available_at > now:
            return "rate"
        return None

    @staticmethod
    def backlog(*, now: dt.datetime | None = None) -> dict[str, int]:
        """Pending subtasks, and how many of them could be sent now (due, of a runnable task)."""
        now = now or timezone.now()
        pending = SubTask.objects.filter(status=SubTask.Status.PENDING)
        due = pending.filter(
            Q(task__scheduled_at__isnull=True) | Q(task__scheduled_at__lte=now),
            next_attempt_at__lte=now,
            task__status__in=RUNNABLE_TASKS,
        )
        return {"pending": pending.count(), "due": due.count()}

    @staticmethod
    def oldest_waiting_task(*, now: dt.datetime | None = None) -> dict[str, Any] | None:
        """The runnable task that has waited longest for its first send, or None."""
        now = now or timezone.now()
        row = (
            TaskWaitMetric.objects.filter(
                status=TaskWaitMetric.Status.WAITING,
                queue_entry_time__lte=now,
                task__status__in=RUNNABLE_TASKS,
            )
            .order_by("queue_entry_time")
            .values("task_id", "user_id", "queue_entry_time", "task__name")
            .first()
        )
        if row is None:
            return None
        return {
            "task_id": str(row["task_id"]),
            "task_name": row["task__name"],
            "user_id": str(row["user_id"]),
            "queue_entry_time": row["queue_entry_time"],
            "wait_seconds": int((now - row["queue_entry_time"]).total_seconds()),
        }

    @staticmethod
    def totals() -> dict[str, int]:
        """The services' cumulative sent and failed (attempt) counters, summed."""
        sums = EmailService.objects.aggregate(sent=Sum("total_sent"), failed=Sum("total_failed"))
        return {"sent": sums["sent"] or 0, "failed": sums["failed"] or 0}
