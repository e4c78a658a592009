"""Suppressed recipients: the claim marks them suppressed, charges nothing for them, and their tasks still finish."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.utils import timezone

from config.services import get_config_by_category
from deliverability.models import Suppression
from deliverability.suppressions import suppression_add
from monitoring.services.tasks import TaskMonitorService
from queues.models import SendAttempt, SubTask, Task
from queues.recovery import FailureRecoveryService
from queues.reports import format_report, run_report
from queues.scheduler import slots as rate_slots
from queues.scheduler.claim import ClaimStatus, claim_subtasks
from queues.services import task_create, tasks_complete_if_done
from tests.api_helpers import client_for


def claim(limit: int = 10):
    return claim_subtasks(worker_id="test-worker", limit=limit, queue_config=get_config_by_category("queue"))


def make_task(owner, recipients, name="t"):
    return task_create(owner=owner, name=name, subject="s", body_text="b", recipients=recipients)


def suppress(owner, email, reason=Suppression.Reason.HARD_BOUNCE):
    suppression_add(owner_id=None if owner is None else owner.pk, email=email, reason=reason, source="test")


def statuses(task) -> dict[str, str]:
    return dict(task.subtasks.values_list("recipient_email", "status"))


@pytest.fixture
def service(email_service_factory):
    return email_service_factory(sending_rate=0, daily_quota=100)


def test_a_claim_skips_the_owners_and_the_platforms_suppressed_addresses_and_charges_only_the_rest(
    service, user_factory
):
    user, other = user_factory(), user_factory()
    task = make_task(user, ["Own@Example.com", "all@example.com", "theirs@example.com", "ok@example.com"])
    suppress(user, "own@example.com")  # stored lowercased, matched whatever the case
    suppress(None, "all@example.com", Suppression.Reason.COMPLAINT)
    suppress(other, "theirs@example.com")  # another owner's list: not this owner's business

    result = claim(10)

    assert result.status is ClaimStatus.CLAIMED
    assert sorted(i.recipient_email for i in result.items) == ["ok@example.com", "theirs@example.com"]
    assert statuses(task) == {
        "Own@example.com": "suppressed",
        "all@example.com": "suppressed",
        "theirs@example.com": "allocated",
        "ok@example.com": "allocated",
    }
    assert dict(task.subtasks.filter(status="suppressed").values_list("recipient_email", "error_message")) == {
        "Own@example.com": "suppressed: hard_bounce",
        "all@example.com": "suppressed: complaint (platform-wide list)",
    }
    assert {s for s, _ in result.suppressed} == set(
        task.subtasks.filter(status="suppressed").values_list("pk", flat=True)
    )
    assert not task.subtasks.filter(status="suppressed", service__isnull=False).exists()
    service.refresh_from_db()
    assert service.used_quota == 2


def test_an_address_suppressed_after_the_task_was_created_is_still_skipped(service, user):
    task = make_task(user, ["a@example.com", "b@example.com"])
    assert claim(1).items[0].recipient_email == "a@example.com"
    suppress(user, "b@example.com")

    result = claim(10)

    assert result.status is ClaimStatus.RETRY  # picked work, none of it to send
    assert statuses(task) == {"a@example.com": "allocated", "b@example.com": "suppressed"}
    service.refresh_from_db()
    assert service.used_quota == 1


def test_the_same_address_in_two_tasks_of_one_owner_is_suppressed_in_both(service, user):
    first, second = make_task(user, ["x@example.com"], "one"), make_task(user, ["x@example.com"], "two")
    suppress(user, "x@example.com")

    claim(10)

    assert set(SubTask.objects.values_list("status", flat=True)) == {"suppressed"}
    assert set(Task.objects.filter(pk__in=[first.pk, second.pk]).values_list("status", flat=True)) == {"completed"}


def test_a_task_with_every_recipient_suppressed_completes_without_charging_any_service(email_service_factory, user):
    service = email_service_factory(sending_rate=0.5, daily_quota=100)
    task = make_task(user, ["a@example.com", "b@example.com"])
    suppress(user, "a@example.com")
    suppress(None, "b@example.com")

    result = claim(10)

    assert (result.status, result.items, len(result.suppressed)) == (ClaimStatus.RETRY, [], 2)
    task.refresh_from_db()
    assert (task.status, task.completed_at is not None) == ("completed", True)
    service.refresh_from_db()
    assert (service.used_quota, service.next_available_at) == (0, None)  # no quota, no rate slot taken
    assert not SendAttempt.objects.exists()
    assert claim(10).status is ClaimStatus.RETRY  # the owner found idle leaves the rotation
    assert claim(10).status is ClaimStatus.NO_WORK


def test_a_lost_finishing_step_keeps_the_claim_and_the_stuck_task_recovery_finishes_the_task(
    service, user, monkeypatch
):
    done = make_task(user, ["gone@example.com"], "done")
    make_task(user, ["ok@example.com"], "other")
    suppress(user, "gone@example.com")

    def database_gone(task_ids):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("queues.scheduler.claim.tasks_complete_if_done", database_gone)
    result = claim(10)
    monkeypatch.undo()

    assert [i.recipient_email for i in result.items] == ["ok@example.com"]  # the claim is kept
    done.refresh_from_db()
    assert done.status == "sending"
    Task.objects.filter(pk=done.pk).update(updated_at=timezone.now() - dt.timedelta(minutes=31))

    report = FailureRecoveryService().run()

    assert report.counts["stuck_task.completed"] == 1
    done.refresh_from_db()
    assert done.status == "completed"


def test_suppressed_picks_take_no_rate_slot(email_service_factory, user):
    service = email_service_factory(sending_rate=0.1, daily_quota=100)
    make_task(user, ["a@example.com", "b@example.com", "c@example.com", "d@example.com"])
    suppress(user, "a@example.com")
    suppress(user, "c@example.com")

    result = claim(4)

    assert [i.recipient_email for i in result.items] == ["b@example.com", "d@example.com"]
    starts = sorted(result.slots.values())
    expected_starts, free_at = rate_slots.plan(starts[0], 0.1, 2)
    assert starts == expected_starts
    service.refresh_from_db()
    assert (service.used_quota, service.next_available_at) == (2, free_at)


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        pytest.param(["suppressed", "suppressed"], "completed", id="only-suppressed"),
        pytest.param(["sent", "suppressed"], "completed", id="sent-and-suppressed"),
        pytest.param(["failed", "suppressed"], "failed", id="failed-and-suppressed"),
        pytest.param(["sent", "failed", "suppressed"], "completed", id="some-sent"),
    ],
)
def test_a_finished_task_completes_unless_nothing_was_sent_and_something_failed(service, user, outcomes, expected):
    task = make_task(user, [f"r{i}@example.com" for i in range(len(outcomes))])
    for subtask, outcome in zip(task.subtasks.order_by("recipient_email"), outcomes, strict=True):
        SubTask.objects.filter(pk=subtask.pk).update(status=outcome, service=service if outcome == "sent" else None)

    assert tasks_complete_if_done([task.pk]) == [task.pk]

    task.refresh_from_db()
    assert task.status == expected


def test_progress_counts_and_the_run_report_include_suppressed_recipients(service, user):
    since = timezone.now() - dt.timedelta(seconds=1)
    task = make_task(user, ["a@example.com", "b@example.com", "c@example.com"])
    suppress(user, "a@example.com")
    suppress(None, "b@example.com")

    claim(10)

    status = TaskMonitorService.task_status(task)
    assert (status["counts"]["suppressed"], status["counts"]["allocated"], status["done"]) == (2, 1, 2)
    body = client_for(user).get(f"/api/tasks/{task.pk}/").json()
    assert (body["progress"]["suppressed"], body["progress"]["total"]) == (2, 3)
    report = run_report(since=since)
    assert (report.sent, report.suppressed) == (0, 2)
    assert "2 suppressed recipients skipped" in format_report(report)


# --- the scheduler end to end, with a real SMTP server ------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_scheduler_never_sends_to_suppressed_addresses(smtp_sink, email_service_factory, user_factory):
    alice, bob = user_factory(username="alice"), user_factory(username="bob")
    service = email_service_factory(port=smtp_sink.port, sending_rate=0, daily_quota=1000)
    mixed = make_task(alice, [f"r{i}@alice.example" for i in range(10)], "mixed")
    blocked = make_task(bob, ["Gone@Bob.example", "complained@example.com"], "blocked")
    # Suppressed after the tasks were created, as an unsubscribe or a bounce would.
    for i in (1, 4, 7):
        suppress(alice, f"r{i}@alice.example")
    suppress(None, "r9@alice.example", Suppression.Reason.COMPLAINT)
    suppress(bob, "gone@bob.example")
    suppress(None, "complained@example.com", Suppression.Reason.COMPLAINT)

    call_command("run_scheduler", "--until-empty", "--concurrency", "3", "--worker-id", "suppress-test")

    delivered = sorted(r.recipient for r in smtp_sink.snapshot())
    assert delivered == [f"r{i}@alice.example" for i in (0, 2, 3, 5, 6, 8)]
    assert Counter(mixed.subtasks.values_list("status", flat=True)) == {"sent": 6, "suppressed": 4}
    assert Counter(blocked.subtasks.values_list("status", flat=True)) == {"suppressed": 2}
    assert dict(Task.objects.values_list("name", "status")) == {"mixed": "completed", "blocked": "completed"}
    service.refresh_from_db()
    assert (service.used_quota, service.total_sent, service.total_failed) == (6, 6, 0)
    assert SendAttempt.objects.count() == 6
    assert not SubTask.objects.filter(status="suppressed", service__isnull=False).exists()


# --- index use on PostgreSQL ---------------------------------------------------


@pytest.mark.postgres_only
def test_the_suppression_check_probes_the_lists_unique_indexes(user_factory, service):
    from queues.scheduler.pgsql import SUPPRESS_SQL

    users = user_factory.create_batch(20)
    Suppression.objects.bulk_create(
        Suppression(owner=users[i % 20] if i % 4 else None, email=f"s{i}@example.com", reason="manual", source="t")
        for i in range(20_000)
    )
    make_task(users[0], [f"r{i}@example.com" for i in range(50)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE suppressions; ANALYZE subtasks")
        ids, emails = zip(*SubTask.objects.values_list("pk", "recipient_email"), strict=True)
        params = {
            "ids": "{" + ",".join(map(str, ids)) + "}",
            "owners": "{" + ",".join([str(users[0].pk)] * len(ids)) + "}",
            "emails": "{" + ",".join(emails) + "}",
            "now": timezone.now(),
            "platform": "",
        }
        cursor.execute("EXPLAIN " + SUPPRESS_SQL, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    for index in ("uniq_suppressions_owner_email", "uniq_suppressions_platform_email"):
        assert index in plan, plan
    assert "Seq Scan on suppressions" not in plan, plan


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_several_schedulers_skip_suppressed_addresses_and_finish_every_task(
    smtp_sink, email_service_factory, user_factory, queue_config, schedulers
):
    queue_config(claim_batch_size=5)
    service = email_service_factory(port=smtp_sink.port, sending_rate=0, daily_quota=10_000)
    expected = []
    for user in user_factory.create_batch(4):
        make_task(user, [f"r{i}@{user.username}.example" for i in range(40)], "list")
        for i in range(0, 40, 2):  # half of each list on the owner's list
            suppress(user, f"r{i}@{user.username}.example")
        suppress(None, f"r1@{user.username}.example")  # and one on the platform's
        expected += [f"r{i}@{user.username}.example" for i in range(3, 40, 2)]
        for i in range(10):  # one-recipient tasks, every one suppressed: each must complete
            make_task(user, [f"solo{i}@{user.username}.example"], f"solo {i}")
            suppress(user, f"solo{i}@{user.username}.example")

    schedulers.start(3, "--until-empty", "--concurrency", "2")
    assert schedulers.wait(timeout=120) == [0, 0, 0], schedulers.logs()

    assert sorted(r.recipient for r in smtp_sink.snapshot()) == sorted(expected)  # each exactly once
    assert Counter(SubTask.objects.values_list("status", flat=True)) == {"sent": 76, "suppressed": 124}
    assert set(Task.objects.values_list("status", flat=True)) == {"completed"}
    service.refresh_from_db()
    assert (service.used_quota, service.total_sent) == (76, 76)
