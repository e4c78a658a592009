"""PATCH /api/tasks/<id>/: edits through task_update, with its checks."""

from __future__ import annotations

from queues.models import Task
from tests.api_helpers import client_for
from tests.test_admin_edits import queued_task, row

URL = "/api/tasks/"


def test_api_patch_refuses_a_field_that_cannot_be_edited_and_another_owners_task(user, user_factory):
    task = queued_task(user)
    before = row(task)

    refused = client_for(user).patch(f"{URL}{task.pk}/", {"status": "completed", "name": "x"}, format="json")
    foreign = client_for(user_factory()).patch(f"{URL}{task.pk}/", {"name": "x"}, format="json")

    assert (refused.status_code, refused.json()["errors"]) == (400, {"status": ["cannot be changed"]})
    assert foreign.status_code == 404
    assert row(task) == before


def test_api_patch_of_content_is_a_409_once_the_task_is_sending(user):
    task = queued_task(user)
    Task.objects.filter(pk=task.pk).update(status=Task.Status.SENDING)
    before = row(task)

    response = client_for(user).patch(f"{URL}{task.pk}/", {"subject": "New {{ contact.first_name }}"}, format="json")

    assert response.status_code == 409
    assert response.json() == {"detail": "a sending task's content cannot change: pause it first"}
    assert row(task) == before


def test_api_patch_of_a_bad_value_is_a_400_and_changes_nothing(user):
    task = queued_task(user)
    before = row(task)

    response = client_for(user).patch(f"{URL}{task.pk}/", {"subject": "", "priority": 99999}, format="json")

    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"subject", "priority"}
    assert row(task) == before
