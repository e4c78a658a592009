"""Admin actions: each one calls its service function and reports every outcome once."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from monitoring.models import Alert
from queues.models import EmailService, SubTask, Task
from tests.factories import AlertFactory, SubTaskFactory, TaskFactory


@pytest.fixture
def admin_user(user_factory):
    return user_factory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


def run_action(client, changelist: str, action: str, objects) -> list[tuple[str, str]]:
    """Run the action as the admin's form does; the messages shown on the page it redirects to."""
    response = client.post(
        reverse(f"admin:{changelist}_changelist"),
        {"action": action, "_selected_action": [str(obj.pk) for obj in objects]},
        follow=True,
    )
    assert response.redirect_chain, response.content.decode()[:2000]
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


def snapshot(model, *fields: str) -> dict:
    return {row["pk"]: row for row in model.objects.values("pk", *fields)}


# --- email services -------------------------------------------------------------------------------


def test_enable_clears_the_backoff_and_reports_services_already_enabled(staff_client, email_service_factory):
    later = timezone.now() + dt.timedelta(minutes=10)
    disabled = email_service_factory(is_enabled=False, backoff_level=3, backoff_until=later)
    enabled = email_service_factory(is_enabled=True)
    before = EmailService.objects.get(pk=enabled.pk).updated_at

    result = run_action(staff_client, "queues_emailservice", "enable_services", [disabled, enabled])

    assert result == [("success", "Enabled 1 email service."), ("info", "Already enabled: 1 email service.")]
    disabled.refresh_from_db()
    assert (disabled.is_enabled, disabled.backoff_level, disabled.backoff_until) == (True, 0, None)
    assert EmailService.objects.get(pk=enabled.pk).updated_at == before


def test_disable_turns_off_only_the_selected_services(staff_client, email_service_factory):
    first, second, untouched = email_service_factory.create_batch(3)

    result = run_action(staff_client, "queues_emailservice", "disable_services", [first, second])

    assert result == [("success", "Disabled 2 email services.")]
    assert dict(EmailService.objects.values_list("name", "is_enabled")) == {
        first.name: False,
        second.name: False,
        untouched.name: True,
    }


def test_reset_quota_sets_used_quota_to_zero(staff_client, email_service_factory):
    busy = email_service_factory(used_quota=40)
    idle = email_service_factory(used_quota=0)
    untouched = email_service_factory(used_quota=7)

    result = run_action(staff_client, "queues_emailservice", "reset_quota", [busy, idle])

    assert result == [("success", "Reset the used quota of 2 email services.")]
    assert dict(EmailService.objects.values_list("name", "used_quota")) == {
        busy.name: 0,
        idle.name: 0,
        untouched.name: 7,
    }


# --- tasks ----------------------------------------------------------------------------------------


def test_pause_pauses_runnable_tasks_and_refuses_a_completed_one(staff_client):
    pending = TaskFactory(status=Task.Status.PENDING)
    sending = TaskFactory(status=Task.Status.SENDING)
    paused = TaskFactory(status=Task.Status.PAUSED)
    completed = TaskFactory(status=Task.Status.COMPLETED, name="Done campaign")

    result = run_action(staff_client, "queues_task", "pause_tasks", [pending, sending, paused, completed])

    assert result == [
        ("warning", "Done campaign: a completed task cannot be paused"),
        ("success", "Paused 2 tasks."),
        ("info", "Already paused: 1 task."),
    ]
    assert dict(Task.objects.values_list("pk", "status")) == {
        pending.pk: "paused",
        sending.pk: "paused",
        paused.pk: "paused",
        completed.pk: "completed",
    }


def test_resume_continues_paused_tasks_where_they_stopped(staff_client, email_service):
    fresh = TaskFactory(status=Task.Status.PAUSED)
    SubTaskFactory(task=fresh)
    started = TaskFactory(status=Task.Status.PAUSED)
    SubTaskFactory(task=started, status=SubTask.Status.SENT, service=email_service)
    SubTaskFactory(task=started)
    running = TaskFactory(status=Task.Status.PENDING)
    cancelled = TaskFactory(status=Task.Status.CANCELLED, name="Dropped campaign")

    result = run_action(staff_client, "queues_task", "resume_tasks", [fresh, started, running, cancelled])

    assert result == [
        ("warning", "Dropped campaign: a cancelled task cannot be resumed"),
        ("success", "Resumed 2 tasks."),
        ("info", "Already running: 1 task."),
    ]
    assert dict(Task.objects.values_list("pk", "status")) == {
        fresh.pk: "pending",
        started.pk: "sending",
        running.pk: "pending",
        cancelled.pk: "cancelled",
    }


def test_cancel_cancels_pending_subtasks_and_leaves_sent_ones(staff_client, email_service):
    task = TaskFactory(status=Task.Status.SENDING)
    SubTaskFactory.create_batch(2, task=task)
    sent = SubTaskFactory(task=task, status=SubTask.Status.SENT, service=email_service)
    completed = TaskFactory(status=Task.Status.COMPLETED, name="Done campaign")
    completed_sub = SubTaskFactory(task=completed, status=SubTask.Status.SENT, service=email_service)
    already = TaskFactory(status=Task.Status.CANCELLED)

    result = run_action(staff_client, "queues_task", "cancel_tasks", [task, completed, already])

    assert result == [
        ("warning", "Done campaign: a completed task cannot be cancelled"),
        ("success", "Cancelled 1 task and their 2 pending subtasks."),
        ("info", "Already cancelled: 1 task."),
    ]
    task.refresh_from_db()
    assert task.status == Task.Status.CANCELLED
    assert task.completed_at is not None
    assert sorted(task.subtasks.values_list("status", flat=True)) == ["cancelled", "cancelled", "sent"]
    assert SubTask.objects.get(pk=sent.pk).status == SubTask.Status.SENT
    assert Task.objects.get(pk=completed.pk).status == Task.Status.COMPLETED
    assert SubTask.objects.get(pk=completed_sub.pk).status == SubTask.Status.SENT


def test_retry_failed_queues_failed_subtasks_again(staff_client, email_service):
    task = TaskFactory(status=Task.Status.COMPLETED, completed_at=timezone.now())
    SubTaskFactory.create_batch(2, task=task, status=SubTask.Status.FAILED, attempts=3, error_message="550 no")
    SubTaskFactory(task=task, status=SubTask.Status.SENT, service=email_service)
    clean = TaskFactory(status=Task.Status.COMPLETED)
    SubTaskFactory(task=clean, status=SubTask.Status.SENT, service=email_service)
    cancelled = TaskFactory(status=Task.Status.CANCELLED, name="Dropped campaign")
    dropped_failure = SubTaskFactory(task=cancelled, status=SubTask.Status.FAILED, attempts=3)

    result = run_action(staff_client, "queues_task", "retry_failed_subtasks", [task, clean, cancelled])

    assert result == [
        ("warning", "Dropped campaign: a cancelled task cannot be retried"),
        ("success", "Queued 2 failed subtasks of 1 task again."),
        ("info", "No failed subtasks: 1 task."),
    ]
    task.refresh_from_db()
    assert (task.status, task.completed_at) == (Task.Status.SENDING, None)
    assert sorted(task.subtasks.values_list("status", "attempts")) == [("pending", 0), ("pending", 0), ("sent", 0)]
    assert Task.objects.get(pk=clean.pk).status == Task.Status.COMPLETED
    assert SubTask.objects.filter(pk=dropped_failure.pk, status="failed", attempts=3).exists()


def test_refused_actions_change_nothing(staff_client, email_service):
    done = TaskFactory(status=Task.Status.COMPLETED, name="Done campaign")
    SubTaskFactory(task=done, status=SubTask.Status.SENT, service=email_service)
    before_tasks = snapshot(Task, "status", "updated_at", "completed_at")
    before_subtasks = snapshot(SubTask, "status", "updated_at")

    for action in ("pause_tasks", "resume_tasks", "cancel_tasks"):
        result = run_action(staff_client, "queues_task", action, [done])
        assert [level for level, _ in result] == ["warning"], action

    assert snapshot(Task, "status", "updated_at", "completed_at") == before_tasks
    assert snapshot(SubTask, "status", "updated_at") == before_subtasks


def test_staff_without_change_permission_cannot_run_task_actions(client, user_factory):
    viewer = user_factory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_task"))
    client.force_login(viewer)
    task = TaskFactory(status=Task.Status.PENDING)

    page = client.get(reverse("admin:queues_task_changelist")).content.decode()
    assert "pause_tasks" not in page
    client.post(reverse("admin:queues_task_changelist"), {"action": "pause_tasks", "_selected_action": [task.pk]})

    assert Task.objects.get(pk=task.pk).status == Task.Status.PENDING


# --- alerts ---------------------------------------------------------------------------------------


def test_acknowledge_records_who_and_skips_alerts_that_are_not_open(staff_client, admin_user):
    open_alert = AlertFactory()
    acked = AlertFactory(status=Alert.Status.ACKNOWLEDGED)
    resolved = AlertFactory(status=Alert.Status.RESOLVED)

    result = run_action(staff_client, "monitoring_alert", "acknowledge", [open_alert, acked, resolved])

    assert result == [
        ("success", "Acknowledged 1 alert."),
        ("info", "Not open (already acknowledged or resolved): 2 alerts."),
    ]
    open_alert.refresh_from_db()
    assert (open_alert.status, open_alert.acknowledged_by) == (Alert.Status.ACKNOWLEDGED, admin_user)
    assert open_alert.acknowledged_at is not None
    assert Alert.objects.get(pk=acked.pk).acknowledged_by is None
    assert Alert.objects.get(pk=resolved.pk).status == Alert.Status.RESOLVED


def test_resolve_closes_open_and_acknowledged_alerts(staff_client):
    open_alert = AlertFactory()
    acked = AlertFactory(status=Alert.Status.ACKNOWLEDGED)
    long_ago = timezone.now() - dt.timedelta(days=2)
    resolved = AlertFactory(status=Alert.Status.RESOLVED, resolved_at=long_ago)

    result = run_action(staff_client, "monitoring_alert", "resolve", [open_alert, acked, resolved])

    assert result == [("success", "Resolved 2 alerts."), ("info", "Already resolved: 1 alert.")]
    assert set(Alert.objects.values_list("status", flat=True)) == {"resolved"}
    assert Alert.objects.filter(resolved_at__isnull=True).count() == 0
    assert Alert.objects.get(pk=resolved.pk).resolved_at == long_ago


def test_alerts_are_read_only_apart_from_the_actions(staff_client):
    alert = AlertFactory(message="Disk is full")
    change_url = reverse("admin:monitoring_alert_change", args=[alert.pk])

    page = staff_client.get(change_url).content.decode()
    assert "Disk is full" in page
    assert 'name="_save"' not in page
    assert staff_client.get(reverse("admin:monitoring_alert_add")).status_code == 403
    staff_client.post(change_url, {"message": "changed", "status": "resolved"})
    assert Alert.objects.get(pk=alert.pk).message == "Disk is full"
