"""The task admin shows each task's progress in the list (a bounded number of queries) and a subtask summary."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from queues.models import SubTask, Task
from queues.services import task_create

LIST = reverse("admin:queues_task_changelist")


@pytest.fixture
def staff_client(client, user_factory):
    client.force_login(user_factory(username="root", is_staff=True, is_superuser=True))
    return client


def seeded_task(
    owner, services, *, name: str = "Spring", sent: int = 0, failed: int = 0, suppressed: int = 0, pending: int = 1
):
    """A task with subtasks in the given statuses (sent and failed ones spread over ``services`` in turn)."""
    total = sent + failed + suppressed + pending
    task = task_create(
        owner=owner, name=name, subject="Hi", body_text="x", recipients=[f"r{i}@example.org" for i in range(total)]
    )
    ids = list(task.subtasks.order_by("recipient_email").values_list("pk", flat=True))
    marks = [SubTask.Status.SENT] * sent + [SubTask.Status.FAILED] * failed + [SubTask.Status.SUPPRESSED] * suppressed
    for number, (pk, status) in enumerate(zip(ids, marks, strict=False)):
        service = services[number % len(services)] if status != SubTask.Status.SUPPRESSED else None
        error = f"550 no such user r{number}" if status == SubTask.Status.FAILED else ""
        SubTask.objects.filter(pk=pk).update(status=status, service=service, error_message=error)
    return task


def list_row(page: str, task: Task) -> list[str]:
    """The cells of the task's row in the changelist, as text."""
    row = re.search(rf"<tr>(?:(?!</tr>).)*?/admin/queues/task/{task.pk}/change/(?:(?!</tr>).)*</tr>", page, re.S)
    assert row is not None
    return [
        re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row.group(0), re.S)
    ]


def test_the_list_shows_sent_of_total_failed_suppressed_and_done(staff_client, user, email_service_factory):
    services = [email_service_factory(name="relay-a"), email_service_factory(name="relay-b")]
    task = seeded_task(user, services, sent=5, failed=2, suppressed=1, pending=2)
    empty = seeded_task(user, services, name="Quiet", pending=3)

    page = staff_client.get(LIST).content.decode()

    # name, owner, status, recipients, sent, failed, suppressed, done ...
    assert list_row(page, task)[4:9] == ["10", "5 / 10", "2", "1", "80%"]
    assert list_row(page, empty)[4:9] == ["3", "0 / 3", "0", "0", "0%"]


def test_a_page_of_tasks_costs_the_same_queries_as_a_page_of_one(staff_client, user, email_service_factory):
    services = [email_service_factory()]
    seeded_task(user, services, name="first", sent=1, failed=1)
    with CaptureQueriesContext(connection) as one:
        assert staff_client.get(LIST).status_code == 200
    for number in range(19):
        seeded_task(user, services, name=f"task {number}", sent=2, failed=1, suppressed=1)

    with CaptureQueriesContext(connection) as twenty:
        page = staff_client.get(LIST).content.decode()

    assert page.count("/admin/queues/task/") - page.count("/admin/queues/task/add/") >= 20
    assert len(twenty) == len(one)


def test_a_page_of_twenty_tasks_takes_a_bounded_number_of_queries(
    staff_client, user, email_service_factory, django_assert_max_num_queries
):
    services = [email_service_factory()]
    for number in range(20):
        seeded_task(user, services, name=f"task {number}", sent=3, failed=1)

    with django_assert_max_num_queries(8):
        response = staff_client.get(LIST)

    assert response.status_code == 200
    assert response.content.decode().count("3 / 5") == 20


def test_the_list_sorts_by_sent(staff_client, user, email_service_factory):
    services = [email_service_factory()]
    few = seeded_task(user, services, name="few", sent=1)
    many = seeded_task(user, services, name="many", sent=4)

    # Column 5 after the action checkbox is "sent".
    ascending = staff_client.get(LIST, {"o": "5"}).content.decode()
    descending = staff_client.get(LIST, {"o": "-5"}).content.decode()

    assert ascending.index(f"/task/{few.pk}/change/") < ascending.index(f"/task/{many.pk}/change/")
    assert descending.index(f"/task/{many.pk}/change/") < descending.index(f"/task/{few.pk}/change/")


def test_the_change_page_summarises_subtasks_by_status_and_service_with_the_last_errors(
    staff_client, user, email_service_factory
):
    services = [email_service_factory(name="relay-a"), email_service_factory(name="relay-b")]
    task = seeded_task(user, services, sent=5, failed=12, suppressed=1, pending=2)

    response = staff_client.get(reverse("admin:queues_task_change", args=[task.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    section = page[page.index(">Subtasks</h2>") :]
    tables = re.findall(r'<table class="subtask-summary">(.*?)</table>', section, re.S)
    cells = [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td>(.*?)</td>", t, re.S)] for t in tables]
    by_status, by_service, errors = cells
    assert by_status == ["Pending", "2", "Sent", "5", "Failed", "12", "Suppressed", "1"]
    # Subtasks 0-16 alternate relay-a, relay-b: sent 0-4 (a: 3, b: 2), failed 5-16 (a: 6, b: 6).
    assert by_service == ["relay-a", "3", "6", "relay-b", "2", "6"]
    # The ten most recent failures, four cells each, with the server's reply.
    assert len(errors) == 40
    failed = dict(SubTask.objects.filter(task=task, status="failed").values_list("recipient_email", "error_message"))
    shown = [errors[i * 4 + 1 : i * 4 + 4 : 2] for i in range(10)]
    assert all(failed[email] == message for email, message in shown)
    assert {message for _, message in shown} <= {f"550 no such user r{n}" for n in range(5, 17)}


def test_the_change_page_of_a_task_without_failures_says_so(staff_client, user, email_service_factory):
    task = seeded_task(user, [email_service_factory()], pending=2)

    page = staff_client.get(reverse("admin:queues_task_change", args=[task.pk])).content.decode()

    assert "no failed subtasks" in page
    assert "nothing sent or failed yet" in page
