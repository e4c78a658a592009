from __future__ import annotations

import datetime as dt

import pytest

from queues.models import SendAttempt, SubTask
from tests.api_helpers import client_for

URL = "/api/subtasks/"
T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def two_tasks(user, task_factory, subtask_factory):
    first, second = task_factory(owner=user), task_factory(owner=user)
    subtask_factory(task=first, recipient_email="ann@acme.org", status="pending")
    subtask_factory(task=first, recipient_email="bob@other.org", status="failed")
    subtask_factory(task=second, recipient_email="cy@acme.org", status="pending")
    subtask_factory(recipient_email="someone-else@acme.org")
    return first, second


def _emails(response) -> list[str]:
    assert response.status_code == 200
    return [s["recipient_email"] for s in response.json()["results"]]


def test_list_shows_only_your_subtasks_and_filters(user, two_tasks):
    first, second = two_tasks
    api = client_for(user)

    assert _emails(api.get(URL)) == ["ann@acme.org", "bob@other.org", "cy@acme.org"]
    assert _emails(api.get(URL, {"task": str(first.pk)})) == ["ann@acme.org", "bob@other.org"]
    assert _emails(api.get(URL, {"status": "pending"})) == ["ann@acme.org", "cy@acme.org"]
    assert _emails(api.get(URL, {"recipient": "ACME"})) == ["ann@acme.org", "cy@acme.org"]
    assert _emails(api.get(URL, {"task": str(second.pk), "status": "failed"})) == []
    assert _emails(api.get(URL, {"ordering": "-recipient_email"})) == ["cy@acme.org", "bob@other.org", "ann@acme.org"]
    page = api.get(URL, {"page_size": 2}).json()
    assert (page["count"], len(page["results"])) == (3, 2)


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        pytest.param(
            {"task": "other"},
            {"task": ["Select a valid choice. That choice is not one of the available choices."]},
            id="another-users-task",
        ),
        pytest.param({"task": "not-a-uuid"}, {"task": ["\u201cnot-a-uuid\u201d is not a valid UUID."]}, id="malformed"),
        pytest.param(
            {"status": "lost"},
            {"status": ["Select a valid choice. lost is not one of the available choices."]},
            id="status",
        ),
        pytest.param({"recipient": "a\x00b"}, {"recipient": ["Null characters are not allowed."]}, id="nul"),
    ],
)
def test_bad_filters_are_a_400(user, task_factory, params, errors):
    if params.get("task") == "other":
        params = {"task": str(task_factory().pk)}

    response = client_for(user).get(URL, params)

    assert response.status_code == 400
    assert response.json()["errors"] == errors


def test_detail_shows_the_attempts(user, subtask_factory, email_service):
    subtask = subtask_factory(
        task__owner=user, status="sent", service=email_service, sender_email="s@edm.example", attempts=2
    )
    SendAttempt.objects.create(
        subtask=subtask,
        service=email_service,
        worker_id="w1",
        started_at=T0,
        finished_at=T0 + dt.timedelta(milliseconds=250),
        outcome="transient",
        smtp_code=451,
        smtp_reply="4.7.1 Try again later",
        bounce_class="soft",
    )
    SendAttempt.objects.create(
        subtask=subtask,
        service=None,
        worker_id="w2",
        started_at=T0 + dt.timedelta(minutes=1),
        finished_at=T0 + dt.timedelta(minutes=1, seconds=1),
        outcome="sent",
        smtp_code=250,
        smtp_reply="2.0.0 OK",
    )

    body = client_for(user).get(f"{URL}{subtask.pk}/").json()

    assert (body["status"], body["attempt_count"], body["service"]) == ("sent", 2, str(email_service.pk))
    assert [{k: a[k] for k in a if k != "id"} for a in body["attempts"]] == [
        {
            "service": str(email_service.pk),
            "service_name": email_service.name,
            "started_at": "2026-03-01T09:00:00Z",
            "finished_at": "2026-03-01T09:00:00.250000Z",
            "duration_ms": 250,
            "outcome": "transient",
            "smtp_code": 451,
            "smtp_reply": "4.7.1 Try again later",
            "bounce_class": "soft",
        },
        {
            "service": None,
            "service_name": None,
            "started_at": "2026-03-01T09:01:00Z",
            "finished_at": "2026-03-01T09:01:01Z",
            "duration_ms": 1000,
            "outcome": "sent",
            "smtp_code": 250,
            "smtp_reply": "2.0.0 OK",
            "bounce_class": "",
        },
    ]
    assert "claimed_by" not in body
    assert "worker_id" not in body["attempts"][0]


def test_another_users_subtask_is_a_404(user, subtask):
    response = client_for(user).get(f"{URL}{subtask.pk}/")

    assert (response.status_code, response.json()) == (404, {"detail": "No SubTask matches the given query."})


@pytest.mark.parametrize("pk", ["not-a-uuid", "0", "ffffffff-ffff-ffff-ffff-fffffffffffff"])
def test_malformed_ids_are_a_404(user, pk):
    assert client_for(user).get(f"{URL}{pk}/").status_code == 404


def test_subtasks_are_read_only(user, subtask_factory):
    subtask = subtask_factory(task__owner=user)
    api = client_for(user)

    responses = [
        api.post(URL, {"recipient_email": "x@y.org"}, format="json"),
        api.patch(f"{URL}{subtask.pk}/", {"status": "sent"}, format="json"),
        api.delete(f"{URL}{subtask.pk}/"),
    ]

    assert [r.status_code for r in responses] == [405, 405, 405]
    assert SubTask.objects.get(pk=subtask.pk).status == "pending"
    assert SubTask.objects.count() == 1
