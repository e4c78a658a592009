"""Database constraints for what must never be false (each checked on its own)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from contacts.models import Contact, Tag
from queues.models import EmailService, SubTask


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("daily_quota", -1, id="daily_quota<0"),
        pytest.param("used_quota", -1, id="used_quota<0"),
        pytest.param("sending_rate", -0.5, id="sending_rate<0"),
        pytest.param("success_rate", -1, id="success_rate<0"),
        pytest.param("success_rate", 100.01, id="success_rate>100"),
    ],
)
def test_service_limits_are_enforced_by_the_database(email_service, field, value):
    with pytest.raises(IntegrityError), transaction.atomic():
        EmailService.objects.filter(pk=email_service.pk).update(**{field: value})

    email_service.refresh_from_db()
    assert (email_service.daily_quota, email_service.used_quota, email_service.sending_rate) == (1000, 0, 0.0)
    assert str(email_service.success_rate) == "100.00"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("daily_quota", 0, id="daily_quota=0"),
        pytest.param("sending_rate", None, id="sending_rate=null(use default)"),
        pytest.param("sending_rate", 0.25, id="sending_rate fractional"),
        pytest.param("success_rate", 0, id="success_rate=0"),
        pytest.param("success_rate", 100, id="success_rate=100"),
    ],
)
def test_service_limits_accept_the_edges(email_service, field, value):
    assert EmailService.objects.filter(pk=email_service.pk).update(**{field: value}) == 1


@pytest.mark.parametrize("status", ["allocated", "processing", "sent"])
def test_subtask_needs_a_service_once_claimed(subtask, status):
    with pytest.raises(IntegrityError), transaction.atomic():
        SubTask.objects.filter(pk=subtask.pk).update(status=status)

    subtask.refresh_from_db()
    assert subtask.status == "pending"


@pytest.mark.parametrize("status", ["allocated", "processing", "sent"])
def test_subtask_with_a_service_may_be_claimed(subtask, email_service, status):
    assert SubTask.objects.filter(pk=subtask.pk).update(status=status, service=email_service) == 1


@pytest.mark.parametrize("status", ["pending", "failed", "cancelled"])
def test_subtask_without_service_is_fine_when_not_claimed(subtask, status):
    assert SubTask.objects.filter(pk=subtask.pk).update(status=status, service=None) == 1


def test_one_contact_per_owner_and_email(contact, contact_factory):
    contact_factory(email=contact.email)  # another owner: fine
    with pytest.raises(IntegrityError), transaction.atomic():
        Contact.objects.create(owner=contact.owner, email=contact.email)
    assert Contact.objects.filter(email=contact.email).count() == 2


def test_one_tag_name_per_owner(tag, tag_factory):
    tag_factory(name=tag.name)  # another owner: fine
    with pytest.raises(IntegrityError), transaction.atomic():
        Tag.objects.create(owner=tag.owner, name=tag.name)
    assert Tag.objects.filter(name=tag.name).count() == 2


def test_table_names_follow_the_plan(task_wait_metric, subtask, tag, contact, config_item):
    from config.models import ConfigItem
    from queues.models import Task, TaskWaitMetric

    assert {m._meta.db_table for m in (EmailService, Task, SubTask, TaskWaitMetric, Contact, Tag, ConfigItem)} == {
        "email_services",
        "tasks",
        "subtasks",
        "task_wait_metrics",
        "contacts",
        "tags",
        "config_items",
    }
    assert TaskWaitMetric.objects.get().status == "waiting"
