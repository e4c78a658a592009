"""Bounce and complaint rates: what the recorder counts, the task guard, the window's rates, the sweep's alerts."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from config.services import ConfigManagerService, get_config_by_category
from deliverability.models import OwnerReputationHour, ServiceReputationHour, Suppression, TaskBounceTally
from deliverability.reputation import Rates, hour_of, owner_rates, service_rates, window_start
from monitoring.models import Alert
from queues.maintenance import run_sweep
from queues.models import SendAttempt, SubTask, Task
from queues.scheduler.outcomes import OutcomeRecorder, SendResult
from queues.scheduler.transports import PERMANENT, SENT, TRANSIENT, Delivery
from queues.services import task_resume
from tests.processes import run_in_processes
from tests.queues.test_outcomes import claimed, record, result

pytestmark = pytest.mark.django_db

OK = Delivery(SENT, 250, "2.0.0 queued")
HARD = Delivery(PERMANENT, 550, "5.1.1 user unknown", bounce="hard")
POLICY = Delivery(PERMANENT, 554, "5.7.1 rejected as spam", service_fault=True, bounce="policy")
SOFT = Delivery(TRANSIENT, 450, "4.2.0 mailbox busy", service_fault=True, bounce="soft")


@pytest.fixture
def service(email_service_factory):
    return email_service_factory(sending_rate=0)


@pytest.fixture
def reputation():
    """Set reputation.* settings for the test: ``reputation(min_sample=4, ...)``."""

    def apply(**values):
        for key, value in values.items():
            ConfigManagerService.set_config("reputation", key, value)

    return apply


def outcomes(claim, deliveries):
    return [result(claim, item, delivery) for item, delivery in zip(claim.items, deliveries, strict=True)]


# --- what the recorder counts -------------------------------------------------------------


def test_an_answered_batch_is_counted_per_service_owner_and_task(service, user, queue_config):
    queue_config(max_retries=3)
    claim = claimed(user, 5)

    record(outcomes(claim, [OK, OK, HARD, POLICY, SOFT]))

    counts = ServiceReputationHour.objects.get(service=service)
    assert (counts.answered, counts.sent, counts.hard_bounces, counts.policy_rejections) == (4, 2, 1, 1)
    mine = OwnerReputationHour.objects.get(owner=user)
    assert (mine.answered, mine.sent, mine.hard_bounces, mine.policy_rejections) == (4, 2, 1, 1)
    assert mine.hour == hour_of(mine.hour) and abs(timezone.now() - mine.hour) < dt.timedelta(hours=1)
    tally = TaskBounceTally.objects.get()
    assert (tally.answered, tally.hard_bounces, tally.checked_answered) == (4, 1, 0)
    assert sorted(SendAttempt.objects.values_list("bounce_class", flat=True)) == ["", "", "hard", "policy", "soft"]


def test_a_refused_sender_counts_as_a_policy_rejection_not_as_an_answer(service, user, queue_config):
    queue_config(max_retries=3)
    claim = claimed(user, 1)
    refused = Delivery(TRANSIENT, 550, "5.7.1 sender not permitted", service_fault=True, bounce="policy")  # MAIL FROM

    record(outcomes(claim, [refused]))

    counts = ServiceReputationHour.objects.get()
    assert (counts.answered, counts.sent, counts.hard_bounces, counts.policy_rejections) == (0, 0, 0, 1)
    assert not TaskBounceTally.objects.exists()
    assert SubTask.objects.get().status == "pending"


def test_recording_the_same_outcomes_again_counts_and_suppresses_once(service, user):
    claim = claimed(user, 4)
    results = outcomes(claim, [HARD, HARD, OK, OK])

    record(results)
    record(results)  # the acknowledgement of the first write was lost: the same attempts again

    assert set(Suppression.objects.values_list("email", "reason", "source")) == {
        (f"r0@{user.username}.example", "hard_bounce", "smtp"),
        (f"r1@{user.username}.example", "hard_bounce", "smtp"),
    }
    tally = TaskBounceTally.objects.get()
    assert (tally.answered, tally.hard_bounces) == (4, 2)
    counts = ServiceReputationHour.objects.get()
    assert (counts.answered, counts.hard_bounces) == (4, 2)


def test_an_address_suppressed_while_its_mail_was_under_way_keeps_its_first_entry(service, user):
    claim = claimed(user, 1)
    Suppression.objects.create(owner=user, email=f"r0@{user.username}.example", reason="unsubscribed", source="api")

    record(outcomes(claim, [HARD]))

    entry = Suppression.objects.get()
    assert (entry.reason, entry.source) == ("unsubscribed", "api")
    assert SubTask.objects.get().status == "failed"


def test_an_outcome_for_a_subtask_no_longer_claimed_counts_and_suppresses_nothing(service, user):
    claim = claimed(user, 1)
    SubTask.objects.update(status="pending", claim_token=None, service=None)  # recovered meanwhile

    summary = record(outcomes(claim, [HARD]))

    assert summary.stale == 1
    assert not Suppression.objects.exists()
    assert not TaskBounceTally.objects.exists()
    assert not ServiceReputationHour.objects.exists()


# --- the task guard ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hard", "answered", "paused"),
    [
        pytest.param(1, 10, False, id="at-the-limit"),
        pytest.param(2, 10, True, id="past-the-limit"),
        pytest.param(3, 3, False, id="below-the-minimum-sample"),
    ],
)
def test_a_task_is_paused_only_past_the_limit_with_the_minimum_sample(
    service, user, reputation, hard, answered, paused
):
    reputation(min_sample=4, hard_bounce_rate_limit=0.10)
    claim = claimed(user, answered + 1)  # one more still to send: the task is not finished

    summary = record(outcomes(claim, [HARD] * hard + [OK] * (answered - hard) + [SOFT]))

    task = Task.objects.get()
    assert task.status == ("paused" if paused else "sending")
    assert summary.paused_tasks == ([task.pk] if paused else [])
    assert Alert.objects.filter(alert_type="task_hard_bounces").count() == int(paused)
    if paused:
        assert task.pause_reason == (
            f"{hard} hard bounces in {answered} answered sends (20.0 %), "
            "over the limit of 10.0 % (reputation.hard_bounce_rate_limit)"
        )


def test_a_resumed_task_is_judged_on_the_answers_since_it_was_paused(service, user, reputation):
    reputation(min_sample=4)
    claim = claimed(user, 13)
    first, second, third = claim.items[:4], claim.items[4:8], claim.items[8:12]

    record([result(claim, item, d) for item, d in zip(first, [HARD, HARD, OK, OK], strict=True)])
    task = Task.objects.get()
    assert task.status == "paused"
    task_resume(task=task)
    assert Task.objects.get().pause_reason == ""

    record([result(claim, item, OK) for item in second])  # 2 of 8 overall, none of the 4 since
    assert Task.objects.get().status == "sending"

    record([result(claim, item, d) for item, d in zip(third, [HARD, HARD, OK, OK], strict=True)])
    task = Task.objects.get()
    assert task.status == "paused"
    assert task.pause_reason.startswith("2 hard bounces in 8 answered sends (25.0 %)")
    assert Alert.objects.get(alert_type="task_hard_bounces").occurrences == 2


def test_the_last_sends_of_a_paused_task_raise_no_second_alert(service, user, reputation):
    reputation(min_sample=4)
    claim = claimed(user, 9)
    first, in_flight = claim.items[:4], claim.items[4:8]

    record([result(claim, item, d) for item, d in zip(first, [HARD, HARD, OK, OK], strict=True)])
    reason = Task.objects.get().pause_reason
    record([result(claim, item, d) for item, d in zip(in_flight, [HARD, HARD, OK, OK], strict=True)])

    task = Task.objects.get()
    assert (task.status, task.pause_reason) == ("paused", reason)
    assert Alert.objects.get(alert_type="task_hard_bounces").occurrences == 1
    tally = TaskBounceTally.objects.get()
    assert (tally.answered, tally.checked_answered) == (8, 4)  # judged again after a resume


def test_with_pausing_off_the_guard_only_alerts(service, user, reputation):
    reputation(min_sample=4, pause_tasks=False)
    claim = claimed(user, 5)

    record(outcomes(claim, [HARD, HARD, OK, OK, SOFT]))

    assert Task.objects.get().status == "sending"
    alert = Alert.objects.get(alert_type="task_hard_bounces")
    assert alert.message.endswith("; not paused (reputation.pause_tasks is off).")


def test_a_task_that_finished_with_the_batch_is_not_paused_but_alerted(service, user, reputation):
    reputation(min_sample=4)
    claim = claimed(user, 4)

    record(outcomes(claim, [HARD, HARD, OK, OK]))

    assert Task.objects.get().status == "completed"
    assert Alert.objects.get(alert_type="task_hard_bounces").message.endswith("; not paused: it is completed.")


def test_finishing_a_batch_again_pauses_and_alerts_once(service, user, reputation):
    reputation(min_sample=4)
    claim = claimed(user, 5)
    recorder, config = OutcomeRecorder(worker_id="w1"), get_config_by_category("queue")
    summary = recorder.record(outcomes(claim, [HARD, HARD, OK, OK, SOFT]), queue_config=config)

    recorder.finish(summary, queue_config=config)
    recorder.finish(summary, queue_config=config)  # its commit was not acknowledged

    assert Task.objects.get().status == "paused"
    assert Alert.objects.get(alert_type="task_hard_bounces").occurrences == 1
    tally = TaskBounceTally.objects.get()
    assert (tally.checked_answered, tally.checked_hard_bounces) == (4, 2)


def record_batch_in_worker(worker_id: str, token: str, subtask_ids: list[str], hard: int) -> list[str]:
    """In a child process: record these subtasks' outcomes (the first ``hard`` hard bounces) as one batch."""
    from queues.scheduler.claim import ClaimedSubTask

    results = []
    for n, sub in enumerate(SubTask.objects.filter(pk__in=subtask_ids).order_by("pk")):
        item = ClaimedSubTask(
            id=sub.pk,
            task_id=sub.task_id,
            owner_id=sub.owner_id,
            service_id=sub.service_id,
            recipient_email=sub.recipient_email,
            message_id=sub.message_id,
            attempts=sub.attempts,
            contact=None,
        )
        finished = timezone.now()
        delivery = HARD if n < hard else OK
        results.append(
            SendResult(item, uuid.UUID(token), delivery, finished - dt.timedelta(milliseconds=5), finished, 0.0)
        )
    recorder, config = OutcomeRecorder(worker_id=worker_id), get_config_by_category("queue")
    summary = recorder.record(results, queue_config=config)
    recorder.finish(summary, queue_config=config)
    return [str(t) for t in summary.paused_tasks]


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_four_recorders_at_once_lose_no_count_and_pause_and_alert_once(service, user, reputation):
    reputation(min_sample=20)
    claim = claimed(user, 41)  # one left over: the task is not finished by these batches
    ids = [str(item.id) for item in claim.items[:40]]
    args = [(f"w{i}", str(claim.token), ids[i * 10 : (i + 1) * 10], 3) for i in range(4)]

    paused = run_in_processes(record_batch_in_worker, args)

    task = Task.objects.get()
    assert [t for each in paused for t in each] == [str(task.pk)]  # exactly one of them paused it
    assert task.status == "paused"
    assert Alert.objects.get(alert_type="task_hard_bounces").occurrences == 1
    tally = TaskBounceTally.objects.get()
    assert (tally.answered, tally.hard_bounces) == (40, 12)
    counts = ServiceReputationHour.objects.get()
    assert (counts.answered, counts.sent, counts.hard_bounces) == (40, 28, 12)
    assert Suppression.objects.filter(reason="hard_bounce").count() == 12


# --- rates over the window, and the sweep ------------------------------------------------------


def hours(model, key: str, rows):
    """rows: (hours ago, answered, sent, hard bounces) per hour of ``key`` (a service or an owner)."""
    now = hour_of(timezone.now())
    field = "service" if model is ServiceReputationHour else "owner"
    for ago, answered, sent, hard in rows:
        model.objects.create(
            hour=now - dt.timedelta(hours=ago), answered=answered, sent=sent, hard_bounces=hard, **{field: key}
        )


def complaint(owner, service, email: str, *, hours_ago: float = 0) -> None:
    entry = Suppression.objects.create(
        owner=owner, email=email, reason="complaint", source="webhook:test", service=service
    )
    Suppression.objects.filter(pk=entry.pk).update(created_at=timezone.now() - dt.timedelta(hours=hours_ago))


def test_rates_count_the_window_only_and_are_judged_from_the_minimum_sample(email_service_factory, user_factory):
    config = {"hard_bounce_rate_limit": 0.10, "complaint_rate_limit": 0.003, "min_sample": 50, "window_hours": 24}
    busy, quiet = email_service_factory(), email_service_factory()
    owner, other = user_factory(), user_factory()
    hours(ServiceReputationHour, busy, [(0, 40, 30, 8), (23, 60, 54, 4), (24, 1000, 0, 1000)])  # the last is out
    hours(ServiceReputationHour, quiet, [(0, 10, 2, 9)])
    hours(OwnerReputationHour, owner, [(0, 100, 84, 12)])
    hours(OwnerReputationHour, other, [(1, 5, 5, 0)])
    complaint(owner, busy, "a@x.example")
    complaint(other, busy, "b@x.example", hours_ago=30)  # before the window
    complaint(None, None, "c@x.example")  # platform-wide, from no service: nobody's rate

    since = window_start(timezone.now(), 24)
    services = service_rates(since=since, config=config)
    owners = owner_rates(since=since, config=config)

    assert services[busy.pk].as_dict() == {
        "answered": 100,
        "sent": 84,
        "hard_bounces": 12,
        "hard_bounce_rate": 0.12,
        "complaints": 1,
        "complaint_rate": round(1 / 84, 6),
        "policy_rejections": 0,
        "over_limits": ["hard_bounce", "complaint"],
    }
    assert services[quiet.pk].over_limits == []  # 90 % of 10: too few to judge
    assert owners[owner.pk].over_limits == ["hard_bounce", "complaint"]
    assert (owners[other.pk].complaints, owners[other.pk].over_limits) == (0, [])
    assert owner_rates(since=since, config=config, owner_id=other.pk).keys() == {other.pk}
    assert Rates().as_dict()["hard_bounce_rate"] is None


def test_the_sweep_alerts_for_services_and_owners_past_a_limit_and_resolves_them_once_under(
    email_service_factory, user_factory, reputation
):
    service = email_service_factory(name="relay-a")
    owner = user_factory(username="sloppy")
    hours(ServiceReputationHour, service, [(0, 100, 80, 20), (200, 5, 5, 0)])
    hours(OwnerReputationHour, owner, [(0, 100, 80, 20)])

    result = run_sweep("reputation_check", force=True)

    assert result == {
        "services_over_limit": 1,
        "owners_over_hard_bounce_limit": 1,
        "owners_over_complaint_limit": 0,
        "alerts_resolved": 0,
        "hours_deleted": 1,  # older than the longest window
    }
    alert = Alert.objects.get(alert_type="service_reputation")
    assert (alert.subject, alert.severity, alert.status) == (f"service:{service.pk}", "critical", "open")
    assert alert.message == (
        "Service relay-a: hard-bounce rate 20.0 % (20 of 100 answered sends; limit 10.0 %) over the last 24 h."
    )
    owner_alert = Alert.objects.get(alert_type="owner_reputation")
    assert (owner_alert.subject, owner_alert.severity) == (f"user:{owner.pk}", "warning")
    assert owner_alert.message.startswith("User sloppy: hard-bounce rate 20.0 %")

    reputation(hard_bounce_rate_limit=0.25)
    result = run_sweep("reputation_check", force=True)

    assert result["alerts_resolved"] == 2
    assert set(Alert.objects.values_list("status", flat=True)) == {"resolved"}
