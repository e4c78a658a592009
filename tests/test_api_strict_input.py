"""Request bodies hold writable fields only, PUT replaces, and an empty query parameter is a 400."""

from __future__ import annotations

import pytest

from common.api.filters import EMPTY
from contacts.models import Contact, Tag
from queues.models import Task
from tests.api_helpers import client_for

UNKNOWN = "unknown field"
READ_ONLY = "read-only field: it cannot be set by this request"
TASK = {"name": "n", "subject": "s", "body_text": "hi", "recipients": ["a@example.org"]}


def test_a_task_posted_with_a_status_is_refused_not_created_pending(user):
    response = client_for(user).post("/api/tasks/", {**TASK, "status": "completed"}, format="json")

    assert response.status_code == 400
    # Task creation takes content and recipients; the status is the scheduler's.
    assert response.json() == {"detail": f"status: {UNKNOWN}", "errors": {"status": [UNKNOWN]}}
    assert Task.objects.count() == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        pytest.param("/api/tasks/", {**TASK, "colour": "red"}, "colour", id="task"),
        pytest.param("/api/contacts/", {"email": "a@example.org", "id": "x"}, "id", id="contact-id"),
        pytest.param("/api/tags/", {"name": "vip", "contact_count": 3}, "contact_count", id="tag-count"),
        pytest.param("/api/suppressions/", {"email": "a@example.org", "why": "x"}, "why", id="suppression"),
    ],
)
def test_an_unknown_or_read_only_body_field_is_a_400_naming_it_and_nothing_is_created(user, path, body, field):
    response = client_for(user).post(path, body, format="json")

    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]
    assert response.json()["errors"][field] in ([UNKNOWN], [READ_ONLY])
    assert (Task.objects.count(), Contact.objects.count(), Tag.objects.count()) == (0, 0, 0)


def test_a_recipient_object_with_an_unknown_key_is_refused(user):
    body = {**TASK, "recipients": [{"email": "a@example.org", "nmae": "A"}]}

    response = client_for(user).post("/api/tasks/", body, format="json")

    assert response.status_code == 400
    assert "nmae" in response.json()["detail"]
    assert Task.objects.count() == 0


@pytest.mark.parametrize("reply_to", ["", "reply@example.org"], ids=["blank", "address"])
def test_reply_to_takes_an_address_or_the_blank_as_the_schema_says(user, reply_to):
    response = client_for(user).post("/api/tasks/", {**TASK, "reply_to": reply_to}, format="json")

    assert response.status_code == 201
    assert response.json()["reply_to"] == reply_to


def test_a_tag_put_without_its_name_is_a_400_and_a_patch_without_it_changes_nothing(user, tag_factory):
    tag = tag_factory(owner=user, name="gold")
    api = client_for(user)

    put = api.put(f"/api/tags/{tag.pk}/", {}, format="json")
    patch = api.patch(f"/api/tags/{tag.pk}/", {}, format="json")

    assert (put.status_code, put.json()["errors"]) == (400, {"name": ["This field is required."]})
    assert (patch.status_code, patch.json()["name"]) == (200, "gold")


@pytest.mark.parametrize(
    ("path", "param"),
    [
        pytest.param("/api/tasks/", "created_before", id="filter-datetime"),
        pytest.param("/api/tasks/", "status", id="filter-choice"),
        pytest.param("/api/contacts/", "email", id="filter-text"),
        pytest.param("/api/tasks/", "page", id="page"),
        pytest.param("/api/tasks/", "page_size", id="page-size"),
        pytest.param("/api/deliverability/reputation/", "window_hours", id="query-serializer"),
    ],
)
def test_an_empty_query_parameter_is_a_400_not_the_parameter_left_out(user, path, param):
    response = client_for(user).get(path, {param: ""})

    assert response.status_code == 400
    assert response.json()["errors"] == {param: [EMPTY]}


@pytest.mark.parametrize("value", ["0", "501", "false", "2.5"])
def test_a_page_size_out_of_bounds_or_not_a_number_is_a_400(user, value):
    response = client_for(user).get("/api/tasks/", {"page_size": value})

    assert (response.status_code, list(response.json()["errors"])) == (400, ["page_size"])


@pytest.mark.parametrize(("value", "code"), [("true", 200), ("false", 200), ("1", 400), ("yes", 400)])
def test_boolean_filters_take_true_or_false_as_the_schema_writes_them(user_factory, value, code):
    staff = client_for(user_factory(is_staff=True))

    assert staff.get("/api/services/", {"is_enabled": value}).status_code == code
