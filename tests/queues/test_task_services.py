"""Task lifecycle functions: create (list or tag), pause, resume, cancel, retry-failed, completion."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from contacts.models import Contact
from contacts.tag_manager import ContactTagManager
from queues.models import SubTask, Task, TaskWaitMetric, UserQueue
from queues.services import (
    TaskStateError,
    TaskValidationError,
    task_cancel,
    task_create,
    task_pause,
    task_progress,
    task_resume,
    task_retry_failed,
    tasks_complete_if_done,
)

CONTENT = {"name": "Spring", "subject": "Hi {{ contact.first_name }}", "body_text": "Hello"}


def test_create_from_a_list_upserts_contacts_and_queues_subtasks(user, contact_factory):
    existing = contact_factory(owner=user, email="old@example.org", first_name="Old")
    task = task_create(
        owner=user,
        recipients=[
            "old@example.org",
            {"email": "New@EXAMPLE.org", "first_name": "Nina", "attributes": {"city": "Oslo"}},
            "new@example.org",  # the same address again: dropped
        ],
        **CONTENT,
    )

    subtasks = list(task.subtasks.order_by("recipient_email"))
    assert [s.recipient_email for s in subtasks] == ["New@example.org", "old@example.org"]
    assert subtasks[1].contact == existing
    nina = Contact.objects.get(owner=user, email="New@example.org")
    assert (nina.first_name, nina.attributes) == ("Nina", {"city": "Oslo"})
    assert all(s.status == "pending" and s.owner_id == user.pk for s in subtasks)
    assert all(s.message_id == f"<{s.id.hex}@edm.localhost>" for s in subtasks)
    metric = TaskWaitMetric.objects.get(task=task)
    assert (metric.status, metric.user_id, metric.first_send_time) == ("waiting", user.pk, None)
    assert UserQueue.objects.get(user=user).ready_at <= timezone.now()
    assert task_progress(task) == {
        "pending": 2,
        "allocated": 0,
        "processing": 0,
        "sent": 0,
        "failed": 0,
        "cancelled": 0,
        "parked": 0,
        "suppressed": 0,
        "total": 2,
    }


def test_create_from_a_tag_expands_its_contacts(user, contact_factory, tag_factory):
    tag = tag_factory(owner=user)
    members = contact_factory.create_batch(3, owner=user)
    contact_factory(owner=user)  # not in the tag
    ContactTagManager().add_contacts_to_tag(tag.pk, [c.pk for c in members])

    task = task_create(owner=user, tag=tag, **CONTENT)

    assert task.tag == tag
    assert {s.contact_id for s in task.subtasks.all()} == {c.pk for c in members}


def test_a_scheduled_task_enters_the_queue_at_its_time(user):
    later = timezone.now() + dt.timedelta(hours=2)
    task = task_create(owner=user, recipients=["a@example.org"], scheduled_at=later, **CONTENT)
    assert TaskWaitMetric.objects.get(task=task).queue_entry_time == later
    assert UserQueue.objects.get(user=user).ready_at == later


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        pytest.param({"recipients": ["not-an-address"]}, "recipients", "is not a valid e-mail address", id="bad-email"),
        pytest.param({"recipients": [42]}, "recipients", "expected an address", id="bad-item"),
        pytest.param({"recipients": []}, "recipients", "the list is empty", id="empty"),
        pytest.param({}, "recipients", "either a recipient list or a tag", id="neither"),
        pytest.param({"recipients": ["a@b.org"], "subject": ""}, "subject", "must not be empty", id="no-subject"),
        pytest.param({"recipients": ["a@b.org"], "subject": "a\nb"}, "subject", "one line", id="multiline-subject"),
        pytest.param({"recipients": ["a@b.org"], "body_text": ""}, "body", "text body, an HTML body", id="no-body"),
        pytest.param(
            {"recipients": ["a@b.org"], "body_text": "{% include 'x' %}"}, "body_text", "not allowed", id="include"
        ),
        pytest.param({"recipients": ["a@b.org"], "priority": 10**6}, "priority", "between", id="priority"),
        pytest.param({"recipients": ["a@b.org"], "reply_to": "nope"}, "reply_to", "not a valid", id="reply-to"),
        pytest.param({"recipients": ["a@b.org"], "from_name": "x\r\nBcc: y"}, "from_name", "one line", id="from-name"),
        pytest.param(
            {"recipients": [f"{'a' * 64}@{'b' * 63}.{'c' * 63}.{'d' * 63}.org"]},
            "recipients",
            "is not a valid e-mail address",
            id="email-over-254",
        ),
        pytest.param(
            {"recipients": [{"email": "a@b.org", "first_name": "A\x00"}]}, "recipients", "NUL", id="nul-in-recipient"
        ),
        pytest.param({"recipients": ["a@b.org"], "name": "n" * 201}, "name", "at most 200", id="long-name"),
        pytest.param({"recipients": ["a@b.org"], "subject": "Hi\x00"}, "subject", "NUL", id="nul-in-subject"),
    ],
)
def test_bad_input_is_refused_with_the_field_named_and_nothing_is_written(user, kwargs, field, message):
    arguments = {**CONTENT, **kwargs}
    with pytest.raises(TaskValidationError) as error:
        task_create(owner=user, **arguments)
    assert message in " ".join(error.value.errors[field])
    assert (Task.objects.count(), SubTask.objects.count(), Contact.objects.count()) == (0, 0, 0)
    assert not TaskWaitMetric.objects.exists()


def test_another_users_tag_cannot_be_used(user, tag_factory, contact_factory):
    foreign = tag_factory()
    with pytest.raises(TaskValidationError, match="no such tag"):
        task_create(owner=user, tag=foreign, **CONTENT)


def test_pause_resume_cancel_state_rules(user):
    task = task_create(owner=user, recipients=["a@example.org", "b@example.org"], **CONTENT)

    assert task_pause(task=task).status == "paused"
    assert task_pause(task=task).status == "paused"  # idempotent
    UserQueue.objects.filter(user=user).update(ready_at=None)
    assert task_resume(task=task).status == "pending"
    assert UserQueue.objects.get(user=user).ready_at is not None  # back in the rotation

    assert task_cancel(task=task) == 2
    task.refresh_from_db()
    assert (task.status, task.completed_at is not None) == ("cancelled", True)
    assert set(task.subtasks.values_list("status", flat=True)) == {"cancelled"}
    with pytest.raises(TaskStateError, match="a cancelled task cannot be resumed"):
        task_resume(task=task)
    with pytest.raises(TaskStateError, match="a cancelled task cannot be paused"):
        task_pause(task=task)
    assert task_cancel(task=task) == 0


def test_retry_failed_requeues_only_the_failed_ones_with_a_fresh_budget(user, email_service):
    task = task_create(owner=user, recipients=["a@example.org", "b@example.org", "c@example.org"], **CONTENT)
    a, b, c = task.subtasks.order_by("recipient_email")
    SubTask.objects.filter(pk=a.pk).update(status="sent", service=email_service)
    SubTask.objects.filter(pk__in=[b.pk, c.pk]).update(status="failed", attempts=6, error_message="550 no")
    assert tasks_complete_if_done([task.pk]) == [task.pk]
    task.refresh_from_db()
    assert task.status == "completed"

    assert task_retry_failed(task=task) == 2

    task.refresh_from_db()
    assert (task.status, task.completed_at) == ("sending", None)
    b.refresh_from_db()
    assert (b.status, b.attempts, b.service_id) == ("pending", 0, None)
    assert SubTask.objects.get(pk=a.pk).status == "sent"


def test_a_task_whose_mails_all_failed_ends_failed(user):
    task = task_create(owner=user, recipients=["a@example.org"], **CONTENT)
    task.subtasks.update(status="failed")
    assert tasks_complete_if_done([task.pk]) == [task.pk]
    task.refresh_from_db()
    assert task.status == "failed"


def test_completion_waits_for_every_subtask_and_leaves_paused_tasks_alone(user, email_service):
    task = task_create(owner=user, recipients=["a@example.org", "b@example.org"], **CONTENT)
    first = task.subtasks.first()
    SubTask.objects.filter(pk=first.pk).update(status="sent", service=email_service)
    assert tasks_complete_if_done([task.pk]) == []
    task.subtasks.update(status="sent", service=email_service)
    task_pause(task=task)
    assert tasks_complete_if_done([task.pk]) == []
    task_resume(task=task)
    task.refresh_from_db()
    assert task.status == "completed"  # resuming a finished task completes it
