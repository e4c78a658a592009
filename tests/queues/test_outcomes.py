"""Recording outcomes: compare-and-set on the claim, counters, retries, back-off, first sends, completion."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from common.ids import uuid7
from config.services import get_config_by_category
from monitoring.models import Alert
from queues.models import EmailService, SendAttempt, SubTask, Task, TaskWaitMetric, UserQueue
from queues.scheduler.claim import claim_subtasks
from queues.scheduler.outcomes import OutcomeRecorder, SendResult, retry_delay
from queues.scheduler.transports import PERMANENT, SENT, TRANSIENT, Delivery
from queues.services import task_cancel, task_create
from tests.processes import run_in_processes


def claimed(owner, n: int = 1, **task_fields):
    task_create(
        owner=owner,
        name="t",
        subject="s",
        body_text="b",
        recipients=[f"r{i}@{owner.username}.example" for i in range(n)],
        **task_fields,
    )
    return claim_subtasks(worker_id="w1", limit=n, queue_config=get_config_by_category("queue"))


def result(claim, item, delivery: Delivery, *, ms: int = 40, rate: float = 0.0, failures: int = 0) -> SendResult:
    finished = timezone.now()
    return SendResult(
        item=item,
        token=claim.token,
        delivery=delivery,
        started_at=finished - dt.timedelta(milliseconds=ms),
        finished_at=finished,
        rate=rate,
        service_failures=failures,
    )


def record(results):
    recorder = OutcomeRecorder(worker_id="w1")
    config = get_config_by_category("queue")
    summary = recorder.record(results, queue_config=config)
    recorder.finish(summary, queue_config=config)
    return summary


OK = Delivery(SENT, 250, "2.0.0 queued")


@pytest.fixture
def service(email_service_factory):
    return email_service_factory(sending_rate=0)


def test_a_sent_mail_is_recorded_with_its_attempt_and_the_service_counters(service, user):
    claim = claimed(user, 2)

    summary = record([result(claim, item, OK, ms=40) for item in claim.items])

    assert (summary.sent, summary.stale) == (2, 0)
    for sub in SubTask.objects.all():
        assert (sub.status, sub.attempts, sub.claim_token) == ("sent", 1, None)
        assert sub.sent_at is not None
    attempt = SendAttempt.objects.first()
    assert (attempt.outcome, attempt.smtp_code, attempt.smtp_reply, attempt.worker_id) == (
        "sent",
        250,
        "2.0.0 queued",
        "w1",
    )
    assert attempt.service_id == service.pk and attempt.duration_ms == 40
    service.refresh_from_db()
    assert (service.total_sent, service.total_failed, service.success_rate) == (2, 0, Decimal("100.00"))
    assert service.avg_response_time == 40
    assert service.last_sent_at is not None
    task = Task.objects.get()
    assert (task.status, task.completed_at is not None) == ("completed", True)
    metric = TaskWaitMetric.objects.get()
    assert metric.status == "processing" and metric.wait_duration_seconds is not None


def test_an_outcome_for_a_claim_that_no_longer_holds_the_subtask_changes_nothing(service, user):
    claim = claimed(user, 1)
    (item,) = claim.items
    SubTask.objects.filter(pk=item.id).update(status="pending", claim_token=None, service=None)  # recovered

    summary = record([result(claim, item, OK)])

    assert (summary.sent, summary.stale) == (0, 1)
    assert SubTask.objects.get().status == "pending"
    assert SendAttempt.objects.count() == 1  # the attempt happened all the same


def test_a_transient_failure_retries_later_with_backoff_then_fails(service, user, queue_config):
    queue_config(max_retries=1, retry_backoff_seconds=30)
    claim = claimed(user, 1)
    (item,) = claim.items
    before = timezone.now()

    summary = record([result(claim, item, Delivery(TRANSIENT, 451, "try later", service_fault=True))])

    sub = SubTask.objects.get()
    assert summary.retried == 1
    assert (sub.status, sub.attempts, sub.service_id, sub.claim_token) == ("pending", 1, None, None)
    assert sub.error_message == "451 try later"
    assert sub.next_attempt_at >= before + dt.timedelta(seconds=30)
    # The owner is in the rotation by the time the retry is due (a claim before
    # then finds nothing and defers them to exactly that moment).
    assert UserQueue.objects.get(user=user).ready_at <= sub.next_attempt_at

    SubTask.objects.filter(pk=sub.pk).update(next_attempt_at=timezone.now())
    UserQueue.objects.filter(user=user).update(ready_at=timezone.now())
    again = claim_subtasks(worker_id="w1", limit=1, queue_config=get_config_by_category("queue"))
    record([result(again, again.items[0], Delivery(TRANSIENT, 451, "still later", service_fault=True))])

    sub.refresh_from_db()
    assert (sub.status, sub.attempts, sub.error_message) == ("failed", 2, "451 still later")
    assert Task.objects.get().status == "failed"


def test_a_permanent_failure_fails_at_once_keeping_the_reply(service, user):
    claim = claimed(user, 1)
    record([result(claim, claim.items[0], Delivery(PERMANENT, 550, "5.1.1 no such user"))])
    sub = SubTask.objects.get()
    assert (sub.status, sub.attempts, sub.error_message) == ("failed", 1, "550 5.1.1 no such user")
    assert SendAttempt.objects.get().smtp_code == 550


def test_a_retry_of_a_cancelled_task_is_cancelled_not_queued(service, user):
    claim = claimed(user, 1)
    task_cancel(task=Task.objects.get())
    record([result(claim, claim.items[0], Delivery(TRANSIENT, 451, "later", service_fault=True))])
    assert SubTask.objects.get().status == "cancelled"


def test_retry_delay_doubles_and_is_capped():
    config = {"retry_backoff_seconds": 10, "retry_backoff_max_seconds": 50}
    assert [retry_delay(n, config) for n in (1, 2, 3, 4)] == [10, 20, 40, 50]


def test_a_failing_service_backs_off_doubling_and_recovers_with_an_alert(email_service_factory, user, queue_config):
    queue_config(max_retries=50, service_failure_threshold=3, service_backoff_seconds=10, retry_backoff_seconds=0)
    service = email_service_factory(sending_rate=0)
    fault = Delivery(TRANSIENT, None, "connection refused", service_fault=True)

    claim = claimed(user, 4)
    record([result(claim, item, fault) for item in claim.items[:3]])
    service.refresh_from_db()
    assert (service.consecutive_failures, service.backoff_level) == (3, 1)
    first_backoff = service.backoff_until
    assert service.next_available_at == first_backoff
    alert = Alert.objects.get(alert_type="service_failing", subject=f"service:{service.pk}")
    assert (alert.status, alert.severity) == ("open", "critical")
    assert "backs off for 10 s" in alert.message

    # Backed off, it is not claimable, even when something moves next_available_at back.
    EmailService.objects.filter(pk=service.pk).update(next_available_at=None)
    assert claim_subtasks(worker_id="w1", limit=1, queue_config=get_config_by_category("queue")).items == []

    # Failures still arriving from sends under way do not back it off again.
    record([result(claim, claim.items[3], fault)])
    service.refresh_from_db()
    assert service.backoff_level == 1

    # When the back-off is over and the service fails again, the pause doubles.
    EmailService.objects.filter(pk=service.pk).update(backoff_until=timezone.now(), next_available_at=None)
    probe = claimed(user, 1)
    record([result(probe, probe.items[0], fault, failures=4)])
    service.refresh_from_db()
    assert service.backoff_level == 2
    assert 19 <= (service.backoff_until - timezone.now()).total_seconds() <= 20
    assert Alert.objects.get(alert_type="service_failing").occurrences == 2

    # A success brings it back and resolves the alert.
    EmailService.objects.filter(pk=service.pk).update(backoff_until=None, next_available_at=None)
    good = claimed(user, 1)
    record([result(good, good.items[0], OK, failures=5)])
    service.refresh_from_db()
    assert (service.consecutive_failures, service.backoff_level, service.backoff_until) == (0, 0, None)
    assert Alert.objects.get(alert_type="service_failing").status == "resolved"


def test_a_success_recorded_between_a_failure_batch_and_its_alert_still_resolves_it(
    email_service_factory, user, queue_config
):
    # Worker A records the failure that reaches the threshold; before A raises
    # the alert, worker B records a success (and finds no alert to resolve).
    queue_config(max_retries=50, service_failure_threshold=3, service_backoff_seconds=10, retry_backoff_seconds=0)
    email_service_factory(sending_rate=0)
    fault = Delivery(TRANSIENT, None, "connection refused", service_fault=True)
    config = get_config_by_category("queue")
    claim = claimed(user, 4)
    worker_a, worker_b = OutcomeRecorder(worker_id="a"), OutcomeRecorder(worker_id="b")

    failed = worker_a.record([result(claim, item, fault) for item in claim.items[:3]], queue_config=config)
    succeeded = worker_b.record([result(claim, claim.items[3], OK, failures=3)], queue_config=config)
    worker_b.finish(succeeded, queue_config=config)
    assert not Alert.objects.exists()
    worker_a.finish(failed, queue_config=config)

    alert = Alert.objects.get(alert_type="service_failing")
    assert alert.status == "resolved"


def test_a_success_claimed_before_the_failures_were_recorded_still_resolves_the_alert(
    email_service_factory, user, queue_config
):
    # Worker B claimed its mail while the service looked healthy (0 failures);
    # worker A's failures are recorded and alerted; then B's success arrives.
    queue_config(max_retries=50, service_failure_threshold=3, service_backoff_seconds=10, retry_backoff_seconds=0)
    email_service_factory(sending_rate=0)
    fault = Delivery(TRANSIENT, None, "connection refused", service_fault=True)
    claim = claimed(user, 4)

    record([result(claim, item, fault) for item in claim.items[:3]])
    assert Alert.objects.get(alert_type="service_failing").status == "open"
    record([result(claim, claim.items[3], OK, failures=0)])

    assert Alert.objects.get(alert_type="service_failing").status == "resolved"
    assert EmailService.objects.get().consecutive_failures == 0


def test_recipient_failures_do_not_count_against_the_service(service, user, queue_config):
    queue_config(service_failure_threshold=1)
    claim = claimed(user, 2)
    record([result(claim, item, Delivery(PERMANENT, 550, "no user")) for item in claim.items])
    service.refresh_from_db()
    assert (service.consecutive_failures, service.backoff_level, service.total_failed) == (0, 0, 2)
    assert service.success_rate == Decimal("0.00")
    assert not Alert.objects.exists()


@pytest.mark.parametrize(
    ("wait", "severity"),
    [(299, None), (300, "warning"), (600, "critical"), (1800, "emergency")],
    ids=["below", "warning", "critical", "emergency"],
)
def test_the_first_send_records_the_wait_and_alerts_past_the_thresholds(service, user, wait, severity):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        claim = claimed(user, 1)
    # Queued at `start` (the entry is the database's moment, which the frozen clock does not move).
    TaskWaitMetric.objects.update(queue_entry_time=start)
    with time_machine.travel(start + dt.timedelta(seconds=wait), tick=False):
        record([result(claim, claim.items[0], OK)])

    metric = TaskWaitMetric.objects.get()
    assert (metric.status, metric.wait_duration_seconds) == ("processing", wait)
    alerts = list(Alert.objects.filter(alert_type="task_wait_exceeded").values_list("severity", flat=True))
    assert alerts == ([severity] if severity else [])


def record_in_worker(worker_id: str, subtask_id: str, token: str, attempt_id: str) -> tuple[int, int, int]:
    """In a child process: record one successful send as worker ``worker_id``; (sent, repeated, first sends)."""
    from queues.scheduler.claim import ClaimedSubTask

    sub = SubTask.objects.get(pk=subtask_id)
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
    outcome = SendResult(
        item=item,
        token=uuid.UUID(token),
        delivery=OK,
        started_at=finished - dt.timedelta(milliseconds=40),
        finished_at=finished,
        rate=0.0,
        attempt_id=uuid.UUID(attempt_id),
    )
    recorder = OutcomeRecorder(worker_id=worker_id)
    config = get_config_by_category("queue")
    summary = recorder.record([outcome], queue_config=config)
    recorder.finish(summary, queue_config=config)
    return summary.sent, summary.repeated, len(summary.first_sends)


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_first_send_is_recorded_once_even_from_two_workers(service, user):
    claim = claimed(user, 2)
    args = [(f"w{i}", str(item.id), str(claim.token), str(uuid7())) for i, item in enumerate(claim.items)]

    outcomes = run_in_processes(record_in_worker, args)

    assert sorted(outcomes) == [(1, 0, 0), (1, 0, 1)]  # both mails recorded; one of them is the first send
    assert TaskWaitMetric.objects.filter(status="processing").count() == 1
    assert Counter(SubTask.objects.values_list("status", flat=True)) == {"sent": 2}


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_one_outcome_recorded_by_two_workers_at_once_is_applied_once(service, user):
    claim = claimed(user, 1)
    (item,) = claim.items
    same = (str(item.id), str(claim.token), str(uuid7()))

    outcomes = run_in_processes(record_in_worker, [("w1", *same), ("w2", *same)])

    assert sorted(outcomes) == [(0, 1, 0), (1, 0, 1)]
    assert SendAttempt.objects.count() == 1
    service.refresh_from_db()
    assert (service.total_sent, service.total_failed) == (1, 0)


# --- outcomes that cannot be recorded as they are, and recording twice ----------------------


@pytest.mark.django_db(transaction=True)  # the foreign keys are checked at the commit
def test_an_outcome_for_a_deleted_task_is_skipped_and_the_rest_of_the_batch_recorded(service, user_factory):
    doomed_owner, other_owner = user_factory.create_batch(2)
    task_create(owner=other_owner, name="kept", subject="s", body_text="b", recipients=["kept@example.com"])
    claim = claimed(doomed_owner, 2)
    doomed, kept = sorted(claim.items, key=lambda item: item.owner_id != doomed_owner.pk)
    Task.objects.filter(owner=doomed_owner).delete()  # while its mail was in flight

    summary = record([result(claim, doomed, OK), result(claim, kept, OK)])

    assert (summary.sent, summary.stale) == (1, 1)
    assert list(SubTask.objects.values_list("status", flat=True)) == ["sent"]
    assert list(SendAttempt.objects.values_list("subtask_id", flat=True)) == [kept.id]
    service.refresh_from_db()
    assert (service.total_sent, service.total_failed) == (2, 0)  # both mails did go out through it


def test_a_reply_with_a_nul_byte_is_recorded(service, user):
    claim = claimed(user, 1)

    record([result(claim, claim.items[0], Delivery(PERMANENT, 550, "5.1.1 no\x00 such user"))])

    sub = SubTask.objects.get()
    assert (sub.status, sub.error_message) == ("failed", "550 5.1.1 no\ufffd such user")
    assert SendAttempt.objects.get().smtp_reply == "5.1.1 no\ufffd such user"


def test_recording_the_same_outcomes_again_applies_them_once(service, user):
    claim = claimed(user, 2)
    results = [result(claim, item, OK) for item in claim.items]
    record(results)

    again = record(results)  # as after a commit whose acknowledgement was lost

    assert (again.sent, again.failed, again.retried) == (0, 0, 0)
    assert SendAttempt.objects.count() == 2
    service.refresh_from_db()
    assert (service.total_sent, service.total_failed) == (2, 0)
