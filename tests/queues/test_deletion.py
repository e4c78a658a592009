"""Deleting a task, erasing a user, deleting a service: never under mail in flight, and nothing changes when refused."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections import Counter

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.urls import reverse

from accounts.models import User
from contacts.models import Contact, Tag
from queues.models import EmailService, SendAttempt, SubTask, Task, TaskWaitMetric, UserQueue
from queues.services import InFlightError, service_delete, task_create, task_delete, user_erase
from tests.api_helpers import client_for
from tests.processes import child_environment
from tests.schedulers import ROOT, wait_until


def queued(owner, n=3, name="news"):
    return task_create(
        owner=owner, name=name, subject="Hi", body_text="Hello", recipients=[f"r{i}@{name}.example" for i in range(n)]
    )


def allocate(task, service, count=1) -> list[SubTask]:
    """As a claim leaves them: allocated to a service under a claim token."""
    subtasks = list(SubTask.objects.filter(task=task, status="pending").order_by("pk")[:count])
    SubTask.objects.filter(pk__in=[s.pk for s in subtasks]).update(
        status="allocated", service=service, claim_token="00000000-0000-0000-0000-000000000001"
    )
    return subtasks


def everything() -> dict:
    """Every row these operations touch, to check that a refusal changed nothing."""
    return {
        "users": list(User.objects.values().order_by("pk")),
        "tasks": list(Task.objects.values().order_by("pk")),
        "subtasks": list(SubTask.objects.values().order_by("pk")),
        "attempts": list(SendAttempt.objects.values().order_by("pk")),
        "contacts": list(Contact.objects.values().order_by("pk")),
        "tags": list(Tag.objects.values().order_by("pk")),
        "metrics": list(TaskWaitMetric.objects.values().order_by("pk")),
        "queues": list(UserQueue.objects.values().order_by("pk")),
        "services": list(EmailService.objects.values().order_by("pk")),
    }


@pytest.fixture
def busy(user_factory, email_service_factory):
    """Two users' tasks; one mail of ann's first task is claimed."""
    ann, bob = user_factory(username="ann"), user_factory(username="bob")
    service = email_service_factory()
    first, second, others = queued(ann, name="first"), queued(ann, name="second"), queued(bob, name="bob")
    sent = SubTask.objects.filter(task=second).order_by("pk").first()
    SubTask.objects.filter(pk=sent.pk).update(status="sent", service=service)
    SendAttempt.objects.create(
        subtask=sent,
        service=service,
        worker_id="w",
        started_at=sent.created_at,
        finished_at=sent.created_at,
        outcome="sent",
    )
    Tag.objects.create(owner=ann, name="vip", contacts=[])
    claimed = allocate(first, service)
    return {
        "ann": ann,
        "bob": bob,
        "service": service,
        "first": first,
        "second": second,
        "others": others,
        "claimed": claimed,
    }


IN_FLIGHT = (
    "1 mail is being sent right now: pause or cancel the work, "
    "and try again once they are recorded (within a minute or so); nothing was deleted"
)


# --- service functions -----------------------------------------------------------------------------


def test_task_delete_removes_the_task_its_subtasks_history_and_metrics(busy):
    task_delete(task=busy["second"])

    assert set(Task.objects.values_list("name", flat=True)) == {"first", "bob"}
    assert SubTask.objects.filter(task_id=busy["second"].pk).count() == 0
    assert SendAttempt.objects.count() == 0
    assert TaskWaitMetric.objects.filter(task_id=busy["second"].pk).count() == 0


def test_task_delete_is_refused_while_mail_is_in_flight_and_changes_nothing(busy):
    before = everything()

    with pytest.raises(InFlightError) as refused:
        task_delete(task=busy["first"])

    assert str(refused.value) == IN_FLIGHT
    assert everything() == before


def test_user_erase_deletes_the_user_and_all_their_data(busy):
    SubTask.objects.filter(pk=busy["claimed"][0].pk).update(status="sent")

    counts = user_erase(user=busy["ann"])

    assert counts == {
        "send attempts": 1,
        "subtasks": 6,
        "wait metrics": 2,
        "tasks": 2,
        "contacts": 6,
        "tags": 1,
    }
    assert list(User.objects.values_list("username", flat=True)) == ["bob"]
    assert Counter(SubTask.objects.values_list("owner__username", flat=True)) == {"bob": 3}
    assert set(Contact.objects.values_list("owner__username", flat=True)) == {"bob"}
    assert list(UserQueue.objects.values_list("user__username", flat=True)) == ["bob"]
    assert Tag.objects.count() == 0


def test_user_erase_is_refused_while_their_mail_is_in_flight_and_changes_nothing(busy):
    before = everything()

    with pytest.raises(InFlightError) as refused:
        user_erase(user=busy["ann"])

    assert str(refused.value) == IN_FLIGHT
    assert everything() == before


def test_service_delete_is_refused_while_mail_is_claimed_through_it(busy, email_service_factory):
    fresh = email_service_factory()
    before = everything()

    with pytest.raises(InFlightError) as refused:
        service_delete(service=busy["service"])

    assert str(refused.value) == (
        "1 mail is being sent through this service right now: disable it, and delete it once they are recorded"
    )
    assert everything() == before
    service_delete(service=fresh)
    assert not EmailService.objects.filter(pk=fresh.pk).exists()


def lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_delete_racing_a_claim_waits_for_it_and_then_refuses(user, email_service):
    task = queued(user, n=2)
    target = SubTask.objects.filter(task=task).order_by("pk").first()
    claimed, commit = threading.Event(), threading.Event()
    outcome: dict[str, str] = {}

    def claim_under_way() -> None:
        # What a claim does in its transaction: lock a pending subtask and allocate it.
        try:
            with transaction.atomic():
                SubTask.objects.select_for_update().filter(pk=target.pk).update(
                    status="allocated", service=email_service, claim_token=uuid.uuid4()
                )
                claimed.set()
                commit.wait(30)
        finally:
            connection.close()

    def delete() -> None:
        try:
            task_delete(task=task)
            outcome["result"] = "deleted"
        except InFlightError as exc:
            outcome["result"] = str(exc)
        finally:
            connection.close()

    claimer = threading.Thread(target=claim_under_way)
    claimer.start()
    assert claimed.wait(30)
    deleter = threading.Thread(target=delete)
    deleter.start()
    wait_until(lambda: lock_waiters() == 1, timeout=30, what="the delete waiting for the claim's row lock")
    commit.set()
    claimer.join()
    deleter.join()

    assert outcome == {"result": IN_FLIGHT}
    assert Counter(SubTask.objects.filter(task=task).values_list("status", flat=True)) == {"allocated": 1, "pending": 1}
    assert Task.objects.get(pk=task.pk).status == "pending"


# --- admin ------------------------------------------------------------------------------------------


@pytest.fixture
def staff(client, user_factory):
    client.force_login(user_factory(username="root", is_staff=True, is_superuser=True))
    return client


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


def test_admin_deletes_a_task_with_its_subtasks(staff, busy):
    url = reverse("admin:queues_task_delete", args=[busy["second"].pk])
    page = staff.get(url)
    assert page.status_code == 200
    assert "second: the task, its 3 subtasks and their send history" in page.content.decode()

    response = staff.post(url, {"post": "yes"}, follow=True)

    assert messages_of(response) == [("success", "The task “second” was deleted successfully.")]
    assert not Task.objects.filter(pk=busy["second"].pk).exists()


def test_admin_task_delete_refused_while_in_flight_says_why_and_changes_nothing(staff, busy):
    before = everything()

    response = staff.post(reverse("admin:queues_task_delete", args=[busy["first"].pk]), {"post": "yes"}, follow=True)

    assert messages_of(response) == [("error", f"Not deleted: {IN_FLIGHT}")]
    assert everything() == before


def test_admin_service_delete_refused_while_in_flight(staff, busy):
    before = everything()

    response = staff.post(
        reverse("admin:queues_emailservice_delete", args=[busy["service"].pk]), {"post": "yes"}, follow=True
    )

    assert response.status_code == 200
    assert (
        "2 subtasks went through it and its history is kept: disable the service instead" in response.content.decode()
    )
    assert everything() == before


def erase_action(client, users):
    return client.post(
        reverse("admin:accounts_user_changelist"),
        {"action": "erase_users", "_selected_action": [str(u.pk) for u in users], "confirm": "yes"},
        follow=True,
    )


def test_admin_erase_action_erases_idle_users_and_refuses_busy_ones(staff, busy):
    response = erase_action(staff, [busy["ann"], busy["bob"]])

    assert messages_of(response) == [
        ("warning", f"ann: {IN_FLIGHT}"),
        ("success", "Erased 1 user and all their data."),
    ]
    assert set(User.objects.values_list("username", flat=True)) == {"root", "ann"}
    assert Counter(Task.objects.values_list("owner__username", flat=True)) == {"ann": 2}


def test_admin_erase_action_asks_for_confirmation_first(staff, busy):
    before = everything()

    page = staff.post(
        reverse("admin:accounts_user_changelist"),
        {"action": "erase_users", "_selected_action": [str(busy["bob"].pk)]},
    )

    assert page.status_code == 200
    assert "bob: 1 tasks, 3 subtasks, 3 contacts" in page.content.decode()
    assert everything() == before


def test_admin_user_delete_page_erases_through_the_same_function(staff, busy):
    url = reverse("admin:accounts_user_delete", args=[busy["bob"].pk])
    assert staff.get(url).status_code == 200

    response = staff.post(url, {"post": "yes"}, follow=True)

    assert messages_of(response) == [("success", "The user “bob” was deleted successfully.")]
    assert not User.objects.filter(username="bob").exists()
    assert not Task.objects.filter(name="bob").exists()


# --- API ---------------------------------------------------------------------------------------------


def test_api_delete_of_a_task(busy):
    ann = client_for(busy["ann"])

    assert client_for(busy["bob"]).delete(f"/api/tasks/{busy['second'].pk}/").status_code == 404
    assert ann.delete(f"/api/tasks/{busy['second'].pk}/").status_code == 204
    assert not Task.objects.filter(pk=busy["second"].pk).exists()
    before = everything()
    refused = ann.delete(f"/api/tasks/{busy['first'].pk}/")
    assert (refused.status_code, refused.json()) == (409, {"detail": IN_FLIGHT})
    assert everything() == before


def test_api_delete_of_a_service_with_claimed_mail_is_a_409(busy, user_factory, email_service_factory):
    staff = client_for(user_factory(is_staff=True))
    SendAttempt.objects.all().delete()
    SubTask.objects.filter(status="sent").update(status="failed", service=None)
    before = everything()

    refused = staff.delete(f"/api/services/{busy['service'].pk}/")

    assert (refused.status_code, refused.json()) == (
        409,
        {
            "detail": "1 mail is being sent through this service right now: "
            "disable it, and delete it once they are recorded"
        },
    )
    assert everything() == before


# --- command -------------------------------------------------------------------------------------------


def test_erase_user_command_by_username_or_id(busy, capsys):
    call_command("erase_user", "bob", "--yes")
    SubTask.objects.filter(status="allocated").update(status="sent")
    call_command("erase_user", str(busy["ann"].pk), "--yes")

    assert User.objects.count() == 0
    assert Task.objects.count() == 0
    out = capsys.readouterr().out
    assert "Erased user bob: 0 send attempts, 3 subtasks, 1 wait metrics, 1 tasks, 3 contacts, 0 tags." in out


def test_erase_user_command_refuses_while_in_flight(busy):
    before = everything()
    with pytest.raises(CommandError) as refused:
        call_command("erase_user", "ann", "--yes")
    assert str(refused.value) == IN_FLIGHT
    assert everything() == before


def test_erase_user_command_needs_a_confirmation(busy, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    before = everything()
    with pytest.raises(CommandError) as refused:
        call_command("erase_user", "bob")
    assert str(refused.value) == "not confirmed: nothing was erased"
    assert everything() == before

    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    call_command("erase_user", "bob")
    assert not User.objects.filter(username="bob").exists()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["nobody", "--yes"], "CommandError: no user with the username or id 'nobody'"),
        (["bob"], "CommandError: not confirmed: nothing was erased"),
    ],
    ids=["unknown-user", "no-confirmation"],
)
@pytest.mark.django_db(transaction=True)
def test_erase_user_command_exits_non_zero_with_one_readable_line(user_factory, args, error):
    user_factory(username="bob")
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "erase_user", *args],
        cwd=ROOT,
        env=child_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [error]
    assert User.objects.filter(username="bob").exists()
