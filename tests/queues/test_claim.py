"""The claim transaction: which service slots and which subtasks, in which order."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone

from config.services import get_config_by_category
from queues.models import EmailService, SubTask, Task, UserQueue
from queues.scheduler.claim import ClaimStatus, claim_subtasks, claims_release, claims_start, quota_day
from queues.scheduler.slots import SLOT_BOUNDARY_SECONDS, SLOT_LEAD_SECONDS, SLOT_WINDOW_SECONDS, slots_per_claim
from queues.services import task_cancel, task_create, task_pause


def claim(limit: int = 1):
    return claim_subtasks(worker_id="test-worker", limit=limit, queue_config=get_config_by_category("queue"))


def make_task(owner, n, **kwargs):
    return task_create(
        owner=owner,
        name=kwargs.pop("name", "t"),
        subject="s",
        body_text="b",
        recipients=[f"{kwargs.pop('prefix', 'r')}{i}@{owner.username}.example" for i in range(n)],
        **kwargs,
    )


def owners(result) -> list[str]:
    names = dict(Task.objects.values_list("id", "owner__username"))
    return [names[i.task_id] for i in result.items]


@pytest.fixture
def service(email_service_factory):
    return email_service_factory(sending_rate=0, daily_quota=10_000)


def test_users_take_turns_one_claim_after_another(service, user_factory):
    a, b, c = (user_factory(username=n) for n in ("a", "b", "c"))
    for user in (a, b, c):
        make_task(user, 3)

    order = [owners(claim(1))[0] for _ in range(9)]

    assert order == ["a", "b", "c"] * 3
    # Each user found with nothing left leaves the rotation; then there is no work.
    statuses = [claim(1).status for _ in range(4)]
    assert statuses == [ClaimStatus.RETRY, ClaimStatus.RETRY, ClaimStatus.RETRY, ClaimStatus.NO_WORK]
    assert set(UserQueue.objects.values_list("ready_at", flat=True)) == {None}


def test_one_claim_takes_whole_rounds_in_rotation_order(service, user_factory):
    a, b, c = (user_factory(username=n) for n in ("a", "b", "c"))
    make_task(a, 10)
    make_task(b, 1)
    make_task(c, 10)

    assert owners(claim(7)) == ["a", "b", "c", "a", "c", "a", "c"]


def test_within_a_user_higher_priority_first_then_oldest(service, user):
    low = make_task(user, 2, name="low", priority=0, prefix="low")
    high = make_task(user, 2, name="high", priority=5, prefix="high")
    later_high = make_task(user, 1, name="later-high", priority=5, prefix="lh")

    tasks = [claim(1).items[0].task_id for _ in range(5)]

    assert tasks == [high.pk, high.pk, later_high.pk, low.pk, low.pk]


def test_paused_cancelled_and_future_tasks_are_never_claimed(service, user_factory):
    paused_owner, cancelled_owner, scheduled_owner = user_factory.create_batch(3)
    task_pause(task=make_task(paused_owner, 2))
    task_cancel(task=make_task(cancelled_owner, 2))
    later = timezone.now() + dt.timedelta(hours=1)
    make_task(scheduled_owner, 2, scheduled_at=later)

    assert claim(10).status is ClaimStatus.RETRY  # the rotation moved past users with nothing to send
    assert claim(10).status is ClaimStatus.NO_WORK
    assert not SubTask.objects.exclude(status__in=["pending", "cancelled"]).exists()
    queues = dict(UserQueue.objects.values_list("user_id", "ready_at"))
    assert queues[paused_owner.pk] is None  # out of the rotation until resumed
    assert queues[scheduled_owner.pk] == later  # back when the task is due


def test_a_retry_is_not_claimed_before_its_time(service, user):
    task = make_task(user, 1)
    soon = timezone.now() + dt.timedelta(seconds=30)
    task.subtasks.update(next_attempt_at=soon)

    assert claim(1).status is ClaimStatus.RETRY
    assert UserQueue.objects.get(user=user).ready_at == soon


def test_users_found_idle_together_each_wait_for_their_own_next_work(service, user_factory):
    now = timezone.now()
    retrying, scheduled, late_retry, mixed, paused = user_factory.create_batch(5)
    make_task(retrying, 1).subtasks.update(next_attempt_at=now + dt.timedelta(seconds=30))
    make_task(scheduled, 1, scheduled_at=now + dt.timedelta(hours=1))
    # A retry due after its task's start: the retry's time.
    make_task(late_retry, 1, scheduled_at=now + dt.timedelta(hours=1)).subtasks.update(
        next_attempt_at=now + dt.timedelta(hours=2)
    )
    # Several tasks: the soonest of them.
    make_task(mixed, 1, scheduled_at=now + dt.timedelta(hours=3))
    make_task(mixed, 1, prefix="m").subtasks.update(next_attempt_at=now + dt.timedelta(minutes=5))
    task_pause(task=make_task(paused, 1))
    # In the rotation now (as after a retry was queued), though their tasks start later.
    UserQueue.objects.filter(user__in=[scheduled, late_retry]).update(ready_at=now)

    assert claim(10).status is ClaimStatus.RETRY  # all five found idle in one claim

    queues = dict(UserQueue.objects.values_list("user_id", "ready_at"))
    assert queues == {
        retrying.pk: now + dt.timedelta(seconds=30),
        scheduled.pk: now + dt.timedelta(hours=1),
        late_retry.pk: now + dt.timedelta(hours=2),
        mixed.pk: now + dt.timedelta(minutes=5),
        paused.pk: None,
    }
    assert claim(10).status is ClaimStatus.NO_WORK


def test_a_claim_marks_the_subtask_allocated_with_a_lease_and_charges_the_service(service, user):
    make_task(user, 3)
    before = timezone.now()

    result = claim(2)

    assert result.status is ClaimStatus.CLAIMED and len(result.items) == 2
    rows = SubTask.objects.filter(pk__in=[i.id for i in result.items])
    for row in rows:
        assert (row.status, row.service_id, row.sender_email) == ("allocated", service.pk, service.from_email)
        assert (row.claim_token, row.claimed_by) == (result.token, "test-worker")
        assert row.claimed_at >= before
    service.refresh_from_db()
    assert (service.used_quota, service.quota_date) == (2, quota_day(timezone.now(), "UTC"))
    assert Task.objects.get().status == "sending"


def test_ready_services_are_taken_least_used_first_and_rotated_among_equals(email_service_factory, user):
    now = timezone.now()
    email_service_factory(name="busy", sending_rate=0, used_quota=50, quota_date=quota_day(now, "UTC"))
    email_service_factory(name="recent", sending_rate=0, last_sent_at=now)
    email_service_factory(name="older", sending_rate=0, last_sent_at=now - dt.timedelta(minutes=5))
    make_task(user, 3)

    picked = [EmailService.objects.get(pk=claim(1).items[0].service_id).name for _ in range(3)]

    # Equal use: the least recently used first; each claim adds to used_quota.
    assert picked == ["older", "recent", "older"]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"is_enabled": False}, id="disabled"),
        pytest.param({"daily_quota": 5, "used_quota": 5, "quota_date": "today"}, id="quota-used-up"),
        pytest.param({"daily_quota": 0}, id="no-quota"),
        pytest.param({"next_available_at": "future"}, id="not-yet-available"),
    ],
)
def test_no_service_ready(email_service_factory, user, fields):
    now = timezone.now()
    fields = {
        k: (quota_day(now, "UTC") if v == "today" else now + dt.timedelta(minutes=5) if v == "future" else v)
        for k, v in fields.items()
    }
    email_service_factory(sending_rate=0, **fields)
    make_task(user, 1)

    assert claim(1).status is ClaimStatus.NO_SERVICE
    assert SubTask.objects.get().status == "pending"


def test_a_new_quota_day_starts_from_zero(email_service_factory, user):
    now = timezone.now()
    service = email_service_factory(
        sending_rate=0, daily_quota=5, used_quota=5, quota_date=quota_day(now, "UTC") - dt.timedelta(days=1)
    )
    make_task(user, 10)

    assert len(claim(10).items) == 5
    service.refresh_from_db()
    assert (service.used_quota, service.quota_date) == (5, quota_day(now, "UTC"))
    assert claim(10).status is ClaimStatus.NO_SERVICE


def test_the_quota_day_follows_the_configured_time_zone():
    instant = dt.datetime(2026, 3, 1, 20, 30, tzinfo=dt.timezone.utc)
    assert quota_day(instant, "UTC") == dt.date(2026, 3, 1)
    assert quota_day(instant, "Asia/Shanghai") == dt.date(2026, 3, 2)
    assert quota_day(instant, "America/Los_Angeles") == dt.date(2026, 3, 1)


def test_a_rate_limited_service_hands_out_slots_a_rate_apart_up_to_two_seconds_ahead(email_service_factory, user):
    service = email_service_factory(sending_rate=0.25)
    make_task(user, 10)

    first = claim(10)

    spacing = dt.timedelta(seconds=0.25 + SLOT_WINDOW_SECONDS)
    assert len(first.items) == slots_per_claim(0.25) == 7
    starts = [first.slots[i.id] for i in first.items]
    lead = dt.timedelta(seconds=SLOT_LEAD_SECONDS)  # time to reach a sender and connect
    assert starts == [first.started_at + lead + k * spacing for k in range(7)]
    service.refresh_from_db()
    # The next free moment is past the last slot: no other claim can start closer.
    assert service.next_available_at == starts[-1] + spacing + dt.timedelta(seconds=SLOT_BOUNDARY_SECONDS)
    assert claim(10).status is ClaimStatus.NO_SERVICE


def test_the_next_claim_starts_where_the_last_slots_end(email_service_factory, user):
    service = email_service_factory(sending_rate=2.0)
    make_task(user, 5)
    first = claim(5)
    assert len(first.items) == 1  # a rate longer than the horizon: one slot per claim
    EmailService.objects.filter(pk=service.pk).update(
        next_available_at=F("next_available_at") - dt.timedelta(seconds=2.5)
    )
    service.refresh_from_db()
    free_at = service.next_available_at

    second = claim(5)

    soonest = second.started_at + dt.timedelta(seconds=SLOT_LEAD_SECONDS)
    assert [second.slots[i.id] for i in second.items] == [max(free_at, soonest)]


def test_the_default_sending_rate_applies_when_a_service_has_none(email_service_factory, user, queue_config):
    queue_config(default_sending_rate=5)
    email_service_factory(sending_rate=None)
    make_task(user, 5)
    assert len(claim(5).items) == 1
    assert claim(5).status is ClaimStatus.NO_SERVICE


def test_start_lets_through_only_runnable_tasks_and_release_gives_the_rest_back(service, user_factory):
    keep_owner, pause_owner, cancel_owner = user_factory.create_batch(3)
    keep, paused, cancelled = make_task(keep_owner, 1), make_task(pause_owner, 1), make_task(cancel_owner, 1)
    result = claim(3)
    task_pause(task=paused)
    Task.objects.filter(pk=cancelled.pk).update(status="cancelled")

    allowed = claims_start(token=result.token, ids=[i.id for i in result.items])

    assert {SubTask.objects.get(pk=i).task_id for i in allowed} == {keep.pk}
    refused = [i.id for i in result.items if i.id not in allowed]
    assert claims_release(token=result.token, ids=refused, quota_timezone="UTC") == 2
    assert paused.subtasks.get().status == "pending"
    assert cancelled.subtasks.get().status == "cancelled"
    service.refresh_from_db()
    assert service.used_quota == 1  # refunded
    # A release with a token that no longer holds the rows changes nothing.
    assert claims_release(token=uuid.uuid4(), ids=list(allowed), quota_timezone="UTC") == 0


def test_a_release_leaves_the_services_slots_as_they_are(email_service_factory, user):
    service = email_service_factory(sending_rate=0.1)
    make_task(user, 5)
    result = claim(5)
    service.refresh_from_db()
    free_at = service.next_available_at

    claims_release(token=result.token, ids=[result.items[-1].id], quota_timezone="UTC")

    # An earlier slot of the claim may have started: the next one must still keep its distance.
    service.refresh_from_db()
    assert service.next_available_at == free_at


# --- index use on PostgreSQL ---------------------------------------------------


@pytest.fixture
def big_queue(db, user_factory):
    """1,000 services (20 ready), 300 users with 20 pending each, analysed."""
    now = timezone.now()
    EmailService.objects.bulk_create(
        EmailService(
            name=f"s{i}",
            host="h",
            from_email=f"s{i}@x.example",
            sending_rate=1,
            next_available_at=now + dt.timedelta(seconds=60) if i >= 20 else now - dt.timedelta(seconds=1),
        )
        for i in range(1000)
    )
    for user in user_factory.create_batch(300):
        make_task(user, 20)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE email_services; ANALYZE subtasks; ANALYZE tasks; ANALYZE user_queues")


@pytest.mark.postgres_only
def test_the_ready_service_query_uses_its_partial_index(big_queue):
    from queues.scheduler.pgsql import READY_SERVICES_SQL

    with connection.cursor() as cursor:
        params = {"today": timezone.now().date(), "limit": 16, "now": timezone.now(), "lead": 0.15}
        cursor.execute("EXPLAIN " + READY_SERVICES_SQL, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "idx_email_services_next_available_enabled" in plan, plan
    assert "Seq Scan" not in plan, plan


@pytest.mark.postgres_only
def test_the_claim_pick_uses_the_rotation_task_and_subtask_indexes(big_queue):
    from queues.scheduler.claim import _PICK_SQL

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + _PICK_SQL, {"n": 20, "now": timezone.now(), "turn": 1})
        plan = "\n".join(row[0] for row in cursor.fetchall())
    for index in ("idx_user_queues_rotation", "idx_tasks_owner_runnable", "idx_subtasks_claim"):
        assert index in plan, plan
    assert "Seq Scan on subtasks" not in plan and "Seq Scan on tasks" not in plan, plan
