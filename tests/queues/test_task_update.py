"""task_update: edits checked as task_create checks them, allowed by status, effective at the next claim."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from config.services import get_config_by_category
from queues.models import SubTask, Task, TaskWaitMetric, UserQueue
from queues.scheduler.claim import claim_subtasks
from queues.services import TaskStateError, TaskValidationError, task_create, task_retry_failed, task_update

CONTENT = {"name": "Spring", "subject": "Hi {{ contact.first_name }}", "body_text": "Hello"}


def queued(owner, **fields):
    return task_create(owner=owner, recipients=["a@example.org", "b@example.org"], **{**CONTENT, **fields})


def row(task):
    return Task.objects.values().get(pk=task.pk)


def claim(limit=10):
    return claim_subtasks(worker_id="update-test", limit=limit, queue_config=get_config_by_category("queue"))


def test_moving_a_far_schedule_to_now_lets_the_next_claim_take_the_task(user, email_service):
    far = timezone.now() + dt.timedelta(days=30)
    task = queued(user, scheduled_at=far)
    assert claim().items == []

    now = timezone.now()
    task_update(task=task, scheduled_at=now)

    assert sorted(i.recipient_email for i in claim().items) == ["a@example.org", "b@example.org"]
    assert TaskWaitMetric.objects.get(task=task).queue_entry_time >= now


def test_a_later_schedule_holds_the_task_and_moves_its_wait_entry(user, email_service):
    task = queued(user)
    later = timezone.now().replace(microsecond=0) + dt.timedelta(hours=3)

    task_update(task=task, scheduled_at=later)

    assert claim().items == []
    assert TaskWaitMetric.objects.get(task=task).queue_entry_time == later
    assert UserQueue.objects.get(user=user).ready_at == later


def test_priority_changes_the_task_and_its_pending_subtasks(user):
    task = queued(user)
    SubTask.objects.filter(task=task, recipient_email="a@example.org").update(status="failed")

    task_update(task=task, priority=7)

    assert Task.objects.get(pk=task.pk).priority == 7
    assert dict(SubTask.objects.values_list("recipient_email", "priority")) == {"a@example.org": 0, "b@example.org": 7}


@pytest.mark.parametrize(
    ("status", "changes", "errors"),
    [
        ("sending", {"subject": "New"}, {"subject": ["a sending task's content cannot change: pause it first"]}),
        ("completed", {"body_text": "x"}, {"body_text": ["a completed task's content cannot change"]}),
        ("completed", {"priority": 3}, {"priority": ["a completed task's priority cannot change"]}),
        (
            "cancelled",
            {"scheduled_at": dt.datetime(2030, 1, 1, tzinfo=dt.UTC)},
            {"scheduled_at": ["a cancelled task's schedule cannot change"]},
        ),
    ],
    ids=["content-sending", "content-completed", "priority-completed", "schedule-cancelled"],
)
def test_fields_that_the_status_does_not_allow_are_refused(user, status, changes, errors):
    task = queued(user)
    Task.objects.filter(pk=task.pk).update(status=status)
    before = row(task)

    with pytest.raises(TaskStateError) as refused:
        task_update(task=task, **changes)

    assert refused.value.errors == errors
    assert row(task) == before


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({"from_name": "A\r\nBcc: x@example.com"}, {"from_name": ["must be one line of at most 100 characters"]}),
        ({"reply_to": "nope"}, {"reply_to": ["'nope' is not a valid e-mail address"]}),
        ({"priority": 40000}, {"priority": ["must be between -32768 and 32767"]}),
        (
            {"body_html": "{% load static %}"},
            {"body_html": ["body_html: the tag {% load %} is not allowed in mail templates"]},
        ),
        ({"status": "completed"}, {"status": ["cannot be changed"]}),
        (
            {"scheduled_at": dt.datetime(2030, 1, 1, tzinfo=dt.UTC).replace(tzinfo=None)},
            {"scheduled_at": ["must be a date and time with a time zone"]},
        ),
    ],
    ids=["header", "reply-to", "priority", "template", "status", "naive-time"],
)
def test_bad_values_are_refused_and_nothing_changes(user, changes, errors):
    task = queued(user)
    before = row(task)

    with pytest.raises(TaskValidationError) as refused:
        task_update(task=task, **changes)

    assert refused.value.errors == errors
    assert row(task) == before


def test_a_failed_task_can_be_fixed_and_retried(user):
    task = queued(user)
    SubTask.objects.filter(task=task).update(status="failed")
    Task.objects.filter(pk=task.pk).update(status="failed", failure_reason="the task's templates cannot be used")

    task_update(task=task, body_text="Fixed")
    assert task_retry_failed(task=task) == 2

    task.refresh_from_db()
    assert (task.body_text, task.status, task.failure_reason) == ("Fixed", "sending", "")


def test_the_name_can_change_in_any_status(user):
    task = queued(user)
    Task.objects.filter(pk=task.pk).update(status="completed")

    task_update(task=task, name="Spring (done)")

    assert Task.objects.get(pk=task.pk).name == "Spring (done)"
