from __future__ import annotations

import datetime as dt
import uuid

import pytest
import time_machine
from django.utils import timezone

from common.dbclock import db_now
from config.services import get_config_by_category
from contacts.models import Contact
from contacts.tag_manager import ContactTagManager
from queues.models import SubTask, Task, TaskWaitMetric
from queues.scheduler.claim import claim_subtasks
from queues.services import MAX_BODY, MAX_SUBJECT
from tests.api_helpers import client_for


def _deep(levels: int) -> list:
    value: list = [1]
    for _ in range(levels):
        value = [value]
    return value


URL = "/api/tasks/"
CONTENT = {"name": "Spring sale", "subject": "Hello {{ contact.first_name }}", "body_text": "Hi!"}
ZEROS = dict.fromkeys(SubTask.Status.values, 0)


def _post(user, **fields):
    return client_for(user).post(URL, {**CONTENT, **fields}, format="json")


def _claim(limit: int) -> list[uuid.UUID]:
    claim = claim_subtasks(worker_id="api-test", limit=limit, queue_config=get_config_by_category("queue"))
    return [item.id for item in claim.items]


def _statuses(task_id) -> dict[str, str]:
    return dict(SubTask.objects.filter(task_id=task_id).values_list("recipient_email", "status"))


def test_create_with_a_recipient_list(user):
    before = db_now()
    response = _post(
        user,
        recipients=["a@example.org", {"email": "b@Example.org", "first_name": "Bea", "attributes": {"vip": True}}],
        priority=5,
    )
    after = db_now()

    assert response.status_code == 201
    task = Task.objects.get()
    body = response.json()
    assert body["id"] == str(task.pk)
    assert (body["name"], body["status"], body["priority"], body["tag"]) == ("Spring sale", "pending", 5, None)
    assert body["progress"] == {**ZEROS, "pending": 2, "total": 2}
    wait = body["wait"]
    # The queue entry is the database's moment (the web host's clock may be off).
    assert before <= dt.datetime.fromisoformat(wait.pop("queue_entry_time").replace("Z", "+00:00")) <= after
    assert wait == {
        "first_send_time": None,
        "wait_duration_seconds": None,
        "status": "waiting",
    }
    assert _statuses(task.pk) == {"a@example.org": "pending", "b@example.org": "pending"}
    bea = Contact.objects.get(email="b@example.org")
    assert (bea.owner, bea.first_name, bea.attributes) == (user, "Bea", {"vip": True})


def test_create_for_a_tag(user, tag_factory, contact_factory):
    tag = tag_factory(owner=user)
    members = [contact_factory(owner=user, email=f"m{n}@x.org") for n in range(3)]
    ContactTagManager().add_contacts_to_tag(tag.pk, [m.pk for m in members])

    response = _post(user, tag=str(tag.pk))

    assert response.status_code == 201
    assert response.json()["tag"] == str(tag.pk)
    assert response.json()["progress"]["total"] == 3
    assert set(_statuses(response.json()["id"])) == {"m0@x.org", "m1@x.org", "m2@x.org"}


def _nothing_written() -> None:
    assert (Task.objects.count(), SubTask.objects.count(), Contact.objects.count()) == (0, 0, 0)
    assert TaskWaitMetric.objects.count() == 0


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        pytest.param(
            {"recipients": ["ok@x.org", "not-an-address"]},
            {"recipients": ["item 1: 'not-an-address' is not a valid e-mail address"]},
            id="malformed-address",
        ),
        pytest.param({"recipients": []}, {"recipients": ["the list is empty"]}, id="empty-list"),
        pytest.param({}, {"recipients": ["give either a recipient list or a tag, not both or neither"]}, id="neither"),
        pytest.param(
            {"recipients": "a@x.org"}, {"recipients": ['Expected a list of items but got type "str".']}, id="string"
        ),
        pytest.param(
            {"recipients": [42]},
            {"recipients": {"0": ["expected an e-mail address or an object with an 'email' string"]}},
            id="number",
        ),
        pytest.param(
            {"recipients": [{"first_name": "No address"}]},
            {"recipients": {"0": ["expected an e-mail address or an object with an 'email' string"]}},
            id="object-without-email",
        ),
        pytest.param(
            {"recipients": ["a" * 249 + "@x.org"]},
            {"recipients": {"0": ["e-mail addresses have at most 254 characters"]}},
            id="long-address",
        ),
        pytest.param(
            {"recipients": [{"email": "a@x.org", "first_name": ["x"]}]},
            {"recipients": {"0": ["first_name and last_name must be strings of at most 100 characters"]}},
            id="name-type",
        ),
        pytest.param(
            {"recipients": [{"email": "a@x.org", "attributes": {"k": "\u0000"}}]},
            {"recipients": {"0": ["must not contain NUL characters"]}},
            id="nul",
        ),
        pytest.param(
            {"recipients": [{"email": "a@x.org", "attributes": {"k": _deep(22)}}]},
            {"recipients": {"0": ["must not be nested more than 20 levels deep"]}},
            id="deep-attributes",
        ),
        pytest.param({"recipients": None}, {"recipients": ["This field may not be null."]}, id="null-list"),
        pytest.param(
            {"recipients": ["a@x.org"], "priority": 40000},
            {"priority": ["Ensure this value is less than or equal to 32767."]},
            id="priority-range",
        ),
        pytest.param(
            {"recipients": ["a@x.org"], "priority": 10**30},
            {"priority": ["Ensure this value is less than or equal to 32767."]},
            id="priority-huge",
        ),
        pytest.param(
            {"recipients": ["a@x.org"], "priority": "high"},
            {"priority": ["A valid integer is required."]},
            id="priority-text",
        ),
        pytest.param(
            {"recipients": ["a@x.org"], "body_text": "x" * (MAX_BODY + 1)},
            {"body_text": [f"Ensure this field has no more than {MAX_BODY} characters."]},
            id="body-too-long",
        ),
        pytest.param(
            {"recipients": ["a@x.org"], "subject": "s" * (MAX_SUBJECT + 1)},
            {"subject": [f"Ensure this field has no more than {MAX_SUBJECT} characters."]},
            id="subject-too-long",
        ),
        pytest.param(
            {"recipients": ["a@x.org"], "subject": "two\nlines"},
            {"subject": [f"must be one line of at most {MAX_SUBJECT} characters"]},
            id="subject-newline",
        ),
        pytest.param(
            {"recipients": ["a@x.org"], "body_text": ""},
            {"body": ["give a text body, an HTML body, or both"]},
            id="no-body",
        ),
        pytest.param(
            {"recipients": ["a@x.org"], "reply_to": "nobody"},
            {"reply_to": ["'nobody' is not a valid e-mail address"]},
            id="reply-to",
        ),
        pytest.param(
            {"recipients": ["a@x.org"], "scheduled_at": "tomorrow"},
            {
                "scheduled_at": [
                    "Datetime has wrong format. Use one of these formats instead: "
                    "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
                ]
            },
            id="scheduled-at",
        ),
        pytest.param(
            {"recipients": ["a@x.org"], "scheduled_at": "9999-12-31T23:59:59-14:00"},
            {"scheduled_at": ["Datetime value out of range."]},
            id="scheduled-at-overflow",
        ),
        pytest.param(
            {"recipients": ["a@x.org"], "name": "n" * 201},
            {"name": ["Ensure this field has no more than 200 characters."]},
            id="long-name",
        ),
        pytest.param(
            {"recipients": ["a@x.org"], "name": None}, {"name": ["This field may not be null."]}, id="null-name"
        ),
        pytest.param(
            {"tag": "not-a-uuid"}, {"tag": ["\u201cnot-a-uuid\u201d is not a valid UUID."]}, id="tag-malformed"
        ),
        pytest.param(
            {"tag": str(uuid.UUID(int=1))},
            {"tag": ['Invalid pk "00000000-0000-0000-0000-000000000001" - object does not exist.']},
            id="tag-unknown",
        ),
    ],
)
def test_bad_input_is_a_400_and_writes_nothing(user, fields, errors):
    response = _post(user, **fields)

    assert response.status_code == 400
    assert response.json()["errors"] == errors
    assert isinstance(response.json()["detail"], str)
    _nothing_written()


def test_another_users_tag_is_refused(user, tag_factory, contact_factory):
    tag = tag_factory()
    ContactTagManager().add_contact_to_tag(tag.pk, contact_factory(owner=tag.owner).pk)

    response = _post(user, tag=str(tag.pk))

    assert response.status_code == 400
    assert response.json()["errors"] == {"tag": [f'Invalid pk "{tag.pk}" - object does not exist.']}
    assert Task.objects.count() == 0


def test_a_tag_without_contacts_is_refused(user, tag_factory):
    tag = tag_factory(owner=user)

    response = _post(user, tag=str(tag.pk))

    assert (response.status_code, response.json()["errors"]) == (400, {"tag": ["the tag has no contacts"]})
    assert Task.objects.count() == 0


def test_recipients_and_tag_together_are_refused(user, tag_factory):
    response = _post(user, recipients=["a@x.org"], tag=str(tag_factory(owner=user).pk))

    assert response.status_code == 400
    assert response.json()["errors"] == {"recipients": ["give either a recipient list or a tag, not both or neither"]}
    _nothing_written()


def test_list_filters(user, task_factory):
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for day, (name, status, priority) in enumerate(
        [("old-low", "completed", 0), ("mid-high", "sending", 9), ("new-low", "paused", 0)]
    ):
        with time_machine.travel(base + dt.timedelta(days=day), tick=False):
            task_factory(owner=user, name=name, status=status, priority=priority)
    task_factory(name="someone else's")
    api = client_for(user)

    def names(**params) -> list[str]:
        response = api.get(URL, params)
        assert response.status_code == 200
        return [t["name"] for t in response.json()["results"]]

    assert names() == ["new-low", "mid-high", "old-low"]
    assert names(status="sending") == ["mid-high"]
    assert names(priority=0) == ["new-low", "old-low"]
    assert names(priority_min=1) == ["mid-high"]
    assert names(priority_max=0, ordering="created_at") == ["old-low", "new-low"]
    assert names(created_after="2026-01-02T00:00:00Z") == ["new-low", "mid-high"]
    assert names(created_before="2026-01-02T00:00:00Z") == ["old-low"]
    assert names(ordering="-priority")[0] == "mid-high"


def test_list_pagination(user, task_factory):
    task_factory.create_batch(3, owner=user)

    page = client_for(user).get(URL, {"page_size": 2, "page": 2}).json()

    assert (page["count"], len(page["results"]), page["next"]) == (3, 1, None)


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        pytest.param(
            {"status": "exploded"},
            {"status": ["Select a valid choice. exploded is not one of the available choices."]},
            id="status",
        ),
        pytest.param({"priority": "1.5"}, {"priority": ["Enter a whole number."]}, id="priority-fraction"),
        pytest.param(
            {"priority": str(10**30)},
            {"priority": ["Ensure this value is less than or equal to 32767."]},
            id="priority-huge",
        ),
        pytest.param({"created_after": "yesterday"}, {"created_after": ["Enter a valid date/time."]}, id="date"),
        pytest.param(
            {"created_after": "9999-12-31T23:59:59-14:00"},
            {"created_after": ["Enter a date/time between the years 1 and 9999 in UTC."]},
            id="date-beyond-9999-in-utc",
        ),
        pytest.param(
            {"created_before": "0001-01-01T00:00:00+14:00"},
            {"created_before": ["Enter a date/time between the years 1 and 9999 in UTC."]},
            id="date-before-year-1-in-utc",
        ),
    ],
)
def test_bad_filters_are_a_400(user, params, errors):
    response = client_for(user).get(URL, params)

    assert response.status_code == 400
    assert response.json()["errors"] == errors


def test_page_out_of_range_is_a_404(user):
    response = client_for(user).get(URL, {"page": 99})

    assert (response.status_code, response.json()) == (404, {"detail": "Invalid page."})


def test_detail_shows_progress_and_wait(user, email_service):
    task = client_for(user).post(URL, {**CONTENT, "recipients": ["a@x.org", "b@x.org"]}, format="json").json()
    entry = TaskWaitMetric.objects.get().queue_entry_time
    SubTask.objects.filter(task_id=task["id"], recipient_email="a@x.org").update(
        status="sent", service=email_service, sent_at=timezone.now()
    )
    TaskWaitMetric.objects.update(
        status="processing", first_send_time=entry + dt.timedelta(seconds=42), wait_duration_seconds=42
    )

    body = client_for(user).get(f"{URL}{task['id']}/").json()

    assert body["progress"] == {**ZEROS, "pending": 1, "sent": 1, "total": 2}
    assert body["wait"]["wait_duration_seconds"] == 42
    assert body["wait"]["status"] == "processing"


def test_pause_then_resume_sends_nothing_twice(user, email_service):
    task_id = _post(user, recipients=["a@x.org", "b@x.org", "c@x.org"]).json()["id"]
    first = _claim(1)
    SubTask.objects.filter(pk__in=first).update(status="sent", sent_at=timezone.now())
    api = client_for(user)

    paused = api.post(f"{URL}{task_id}/pause/")
    assert (paused.status_code, paused.json()["status"]) == (200, "paused")
    assert _claim(5) == []  # a paused task gives no work

    resumed = api.post(f"{URL}{task_id}/resume/")
    assert (resumed.status_code, resumed.json()["status"]) == (200, "sending")
    second = _claim(5)

    assert len(second) == 2
    assert set(first).isdisjoint(second)
    assert sorted(_statuses(task_id).values()) == ["allocated", "allocated", "sent"]


def test_pause_and_resume_are_idempotent(user):
    task_id = _post(user, recipients=["a@x.org"]).json()["id"]
    api = client_for(user)

    assert api.post(f"{URL}{task_id}/pause/").json()["status"] == "paused"
    assert api.post(f"{URL}{task_id}/pause/").json()["status"] == "paused"
    assert api.post(f"{URL}{task_id}/resume/").json()["status"] == "pending"
    assert api.post(f"{URL}{task_id}/resume/").json()["status"] == "pending"


def test_cancel(user, email_service):
    task_id = _post(user, recipients=["a@x.org", "b@x.org", "c@x.org"]).json()["id"]
    SubTask.objects.filter(task_id=task_id, recipient_email="a@x.org").update(status="sent", service=email_service)
    api = client_for(user)

    response = api.post(f"{URL}{task_id}/cancel/")

    assert response.status_code == 200
    assert response.json()["cancelled"] == 2
    assert response.json()["task"]["status"] == "cancelled"
    assert response.json()["task"]["progress"] == {**ZEROS, "sent": 1, "cancelled": 2, "total": 3}
    assert _statuses(task_id) == {"a@x.org": "sent", "b@x.org": "cancelled", "c@x.org": "cancelled"}
    assert api.post(f"{URL}{task_id}/cancel/").json()["cancelled"] == 0


@pytest.mark.parametrize(
    ("status", "action", "message"),
    [
        pytest.param("cancelled", "pause", "a cancelled task cannot be paused", id="pause-cancelled"),
        pytest.param("completed", "pause", "a completed task cannot be paused", id="pause-completed"),
        pytest.param("cancelled", "resume", "a cancelled task cannot be resumed", id="resume-cancelled"),
        pytest.param("failed", "resume", "a failed task cannot be resumed", id="resume-failed"),
        pytest.param("completed", "cancel", "a completed task cannot be cancelled", id="cancel-completed"),
        pytest.param("cancelled", "retry-failed", "a cancelled task cannot be retried", id="retry-cancelled"),
    ],
)
def test_illegal_transitions_are_a_409_and_change_nothing(user, task_factory, subtask_factory, status, action, message):
    task = task_factory(owner=user, status=status)
    subtask = subtask_factory(task=task, status="failed")

    response = client_for(user).post(f"{URL}{task.pk}/{action}/")

    assert response.status_code == 409
    assert response.json() == {"detail": message}
    task.refresh_from_db()
    subtask.refresh_from_db()
    assert (task.status, subtask.status) == (status, "failed")


def test_retry_failed(user, task_factory, subtask_factory, email_service):
    task = task_factory(owner=user, status="failed")
    failed = subtask_factory.create_batch(2, task=task, status="failed", attempts=3)
    sent = subtask_factory(task=task, status="sent", service=email_service)

    response = client_for(user).post(f"{URL}{task.pk}/retry-failed/")

    assert response.status_code == 200
    assert response.json()["retried"] == 2
    assert response.json()["task"]["status"] == "sending"
    assert [SubTask.objects.get(pk=s.pk).status for s in failed] == ["pending", "pending"]
    assert SubTask.objects.get(pk=sent.pk).status == "sent"
    assert SubTask.objects.filter(task=task, status="pending", attempts=0).count() == 2


def test_another_users_task_is_a_404_everywhere(user, task_factory, subtask_factory):
    task = task_factory(status="sending")
    subtask_factory(task=task)
    api = client_for(user)

    responses = [api.get(f"{URL}{task.pk}/")] + [
        api.post(f"{URL}{task.pk}/{action}/") for action in ("pause", "resume", "cancel", "retry-failed")
    ]

    assert [r.status_code for r in responses] == [404] * 5
    assert responses[0].json() == {"detail": "No Task matches the given query."}
    assert Task.objects.get(pk=task.pk).status == "sending"
    assert client_for(user).get(URL).json()["count"] == 0


def test_staff_see_only_their_own_tasks(user_factory, task):
    staff = user_factory(is_staff=True, is_superuser=True)

    assert client_for(staff).get(f"{URL}{task.pk}/").status_code == 404


@pytest.mark.parametrize("pk", ["not-a-uuid", "123", "null", "%E2%80%A8"])
def test_malformed_ids_are_a_404(user, pk):
    api = client_for(user)

    assert api.get(f"{URL}{pk}/").status_code == 404
    assert api.post(f"{URL}{pk}/pause/").status_code == 404


def test_no_direct_status_change(user, task_factory):
    # A delete is allowed (tests/queues/test_deletion.py); PATCH edits content (tests/queues/test_templates_check.py);
    # a status is never set directly.
    task = task_factory(owner=user)
    api = client_for(user)
    url = f"{URL}{task.pk}/"

    patched = api.patch(url, {"status": "completed"}, format="json")
    put = api.put(url, {**CONTENT, "status": "completed"}, format="json")

    assert (patched.status_code, patched.json()["errors"]) == (400, {"status": ["cannot be changed"]})
    assert (put.status_code, "detail" in put.json()) == (405, True)
    assert Task.objects.get(pk=task.pk).status == "pending"


def test_token_authentication(user):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")

    response = client.post(URL, {**CONTENT, "recipients": ["a@x.org"]}, format="json")

    assert response.status_code == 201
    assert Task.objects.get().owner == user
    assert APIClient().post(URL, {**CONTENT, "recipients": ["a@x.org"]}, format="json").status_code == 401
    assert Task.objects.count() == 1
