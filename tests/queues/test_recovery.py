"""FailureRecoveryService and recover_stuck: which claims go back, how, and never a completed one."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.utils import timezone

from config.services import get_config_by_category
from queues.models import EmailService, SubTask, Task, UserQueue, WorkerHeartbeat
from queues.recovery import FailureRecoveryService
from queues.scheduler.claim import claim_subtasks, claims_start
from queues.scheduler.outcomes import OutcomeRecorder, SendResult
from queues.scheduler.transports import SENT, Delivery
from queues.services import task_cancel, task_create, task_release_parked


def beat(worker_id: str, seconds_ago: float, *, stopped: bool = False) -> None:
    seen = timezone.now() - dt.timedelta(seconds=seconds_ago)
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id,
        defaults={
            "hostname": "h",
            "pid": 1,
            "started_at": seen,
            "last_seen_at": seen,
            "stopped_at": seen if stopped else None,
        },
    )


def claimed(owner, n=1, *, worker="w-dead", start=False):
    task_create(
        owner=owner,
        name="t",
        subject="s",
        body_text="b",
        recipients=[f"r{i}@{owner.username}.example" for i in range(n)],
    )
    claim = claim_subtasks(worker_id=worker, limit=n, queue_config=get_config_by_category("queue"))
    if start:
        claims_start(token=claim.token, ids=[i.id for i in claim.items])
    return claim


@pytest.fixture
def service(email_service_factory):
    return email_service_factory(sending_rate=0)


def test_a_dead_workers_unstarted_claim_goes_back_as_it_was(service, user):
    beat("w-dead", 60)
    claim = claimed(user)
    UserQueue.objects.filter(user=user).update(ready_at=None)

    report = FailureRecoveryService().run()

    assert dict(report.counts) == {"dead_worker.requeued": 1}
    sub = SubTask.objects.get()
    assert (sub.status, sub.attempts, sub.service_id, sub.sender_email, sub.claim_token, sub.claimed_by) == (
        "pending",
        0,
        None,
        None,
        None,
        "",
    )
    assert sub.error_message == "Reset: worker w-dead stopped responding"
    assert sub.message_id == claim.items[0].message_id
    assert UserQueue.objects.get(user=user).ready_at is not None  # back in the rotation


def test_a_started_claim_is_retried_as_an_attempt_with_the_same_message_id(service, user):
    beat("w-dead", 60)
    claim = claimed(user, start=True)
    started = SubTask.objects.get().updated_at

    assert dict(FailureRecoveryService().run().counts) == {"dead_worker.retried": 1}

    sub = SubTask.objects.get()
    assert (sub.status, sub.attempts, sub.message_id) == ("pending", 1, claim.items[0].message_id)
    # Not before the old send can have ended: three of the service's 10 s timeouts.
    assert sub.next_attempt_at == started + dt.timedelta(seconds=30)
    assert "outcome unknown, retried with the same Message-ID" in sub.error_message


def test_a_started_claim_past_its_retries_fails(service, user, queue_config):
    queue_config(max_retries=0)
    beat("w-dead", 60)
    claimed(user, start=True)
    assert dict(FailureRecoveryService().run().counts) == {"dead_worker.failed": 1}
    sub = SubTask.objects.get()
    assert sub.status == "failed" and "outcome unknown after 1 attempts" in sub.error_message


def test_park_mode_parks_started_claims_until_an_operator_decides(service, user):
    from config.services import ConfigManagerService

    ConfigManagerService.set_config("recovery", "unknown_outcome", "park")
    beat("w-dead", 60)
    claimed(user, 2, start=True)

    assert dict(FailureRecoveryService().run().counts) == {"dead_worker.parked": 2}
    task = Task.objects.get()
    assert set(task.subtasks.values_list("status", flat=True)) == {"parked"}
    assert task.status == "sending"  # not finished while something is parked

    first, second = task.subtasks.all()
    SubTask.objects.filter(pk=second.pk).update(status="sent")
    assert task_release_parked(task=task, delivered=False) == 1
    assert SubTask.objects.get(pk=first.pk).status == "pending"
    SubTask.objects.filter(pk=first.pk).update(status="parked", service=service)
    assert task_release_parked(task=task, delivered=True) == 1
    task.refresh_from_db()
    assert (SubTask.objects.get(pk=first.pk).status, task.status) == ("sent", "completed")


@pytest.mark.parametrize(
    ("heartbeat", "recovered"),
    [
        pytest.param(("w1", 5, False), False, id="live-worker"),
        pytest.param(("w1", 31, False), True, id="stale-heartbeat"),
        pytest.param(("w1", 1, True), True, id="stopped-worker"),
        pytest.param(None, True, id="no-heartbeat-row"),
    ],
)
def test_which_workers_count_as_dead(service, user, heartbeat, recovered):
    if heartbeat:
        beat(heartbeat[0], heartbeat[1], stopped=heartbeat[2])
    claimed(user, worker="w1")
    SubTask.objects.update(claimed_at=timezone.now() - dt.timedelta(seconds=40))
    report = FailureRecoveryService().run(rules=("dead_worker",))
    assert report.recovered == (1 if recovered else 0)


def test_a_live_workers_claim_is_reset_after_the_plans_timeout(service, user):
    beat("w-live", 0)
    claimed(user, worker="w-live")
    SubTask.objects.update(updated_at=timezone.now() - dt.timedelta(minutes=9))
    assert FailureRecoveryService().run().recovered == 0

    SubTask.objects.update(updated_at=timezone.now() - dt.timedelta(minutes=11))
    assert dict(FailureRecoveryService().run().counts) == {"timeout.requeued": 1}
    sub = SubTask.objects.get()
    assert (sub.status, sub.error_message, sub.service_id) == ("pending", "Reset due to timeout", None)


def test_recovery_racing_a_completion_never_reverts_the_sent_subtask(service, user):
    beat("w-dead", 60)
    claim = claimed(user, start=True)
    recovery = FailureRecoveryService()

    candidates = recovery.find_candidates()  # recovery reads...
    assert len(candidates) == 1
    finished = timezone.now()
    recorder = OutcomeRecorder(worker_id="w-dead")  # ...the send completes...
    summary = recorder.record(
        [
            SendResult(
                item=claim.items[0],
                token=claim.token,
                delivery=Delivery(SENT, 250, "ok"),
                started_at=finished,
                finished_at=finished,
                rate=0,
            )
        ],
        queue_config=get_config_by_category("queue"),
    )
    assert summary.sent == 1
    from queues.recovery import RecoveryReport

    report = RecoveryReport(dry_run=False)
    recovery.apply(candidates, report)  # ...recovery writes.

    assert dict(report.counts) == {"dead_worker.already_done": 1}
    sub = SubTask.objects.get()
    assert (sub.status, sub.attempts) == ("sent", 1)


def test_stuck_tasks_are_requeued_or_finished(service, user_factory):
    done_owner, stuck_owner = user_factory.create_batch(2)
    beat("w-live", 0)
    done = claimed(done_owner, worker="w-live")
    Task.objects.filter(owner=done_owner).update(status="sending")
    SubTask.objects.filter(task__owner=done_owner).update(status="sent")
    task_create(owner=stuck_owner, name="t", subject="s", body_text="b", recipients=["x@example.org"])
    Task.objects.filter(owner=stuck_owner).update(status="sending")
    UserQueue.objects.filter(user=stuck_owner).update(ready_at=None)
    Task.objects.update(updated_at=timezone.now() - dt.timedelta(minutes=31))

    report = FailureRecoveryService().run()

    assert dict(report.counts) == {"stuck_task.completed": 1, "stuck_task.requeued": 1}
    assert Task.objects.get(owner=done_owner).status == "completed"
    stuck = Task.objects.get(owner=stuck_owner)
    assert stuck.status == "sending" and stuck.updated_at > timezone.now() - dt.timedelta(minutes=1)
    assert UserQueue.objects.get(user=stuck_owner).ready_at is not None
    assert done  # claimed above


def test_dry_run_reports_and_changes_nothing(service, user, capsys):
    beat("w-dead", 60)
    claimed(user, 2, start=True)
    before = list(SubTask.objects.values_list("status", "claim_token"))

    call_command("recover_stuck", "--dry-run")

    assert capsys.readouterr().out.splitlines() == ["recovery would: dead_worker.retried 2"]
    assert list(SubTask.objects.values_list("status", "claim_token")) == before

    call_command("recover_stuck", "--rule", "timeout")
    assert capsys.readouterr().out.splitlines() == ["recovery: nothing to do (applied)"]
    call_command("recover_stuck")
    assert capsys.readouterr().out.splitlines() == ["recovery did: dead_worker.retried 2"]
    assert set(SubTask.objects.values_list("status", flat=True)) == {"pending"}


# --- recovery gaps: cancelled tasks, the send's own time, quota and leases ----------


@pytest.mark.parametrize("start", [pytest.param(False, id="allocated"), pytest.param(True, id="processing")])
def test_recovered_subtasks_of_a_cancelled_task_end_cancelled(service, user, start):
    beat("w-dead", 60)
    claimed(user, 2, start=start)
    task_cancel(task=Task.objects.get())  # claimed subtasks are not pending: cancel leaves them to their worker

    FailureRecoveryService().run()

    assert list(SubTask.objects.values_list("status", "claim_token")) == [("cancelled", None), ("cancelled", None)]


def test_a_cancelled_tasks_parked_subtask_ends_cancelled(service, user):
    from config.services import ConfigManagerService

    ConfigManagerService.set_config("recovery", "unknown_outcome", "park")
    beat("w-dead", 60)
    claimed(user, start=True)
    task_cancel(task=Task.objects.get())

    FailureRecoveryService().run()

    assert SubTask.objects.get().status == "cancelled"


def test_an_unknown_outcome_retry_waits_until_the_old_send_can_have_ended(email_service_factory, user, queue_config):
    email_service_factory(sending_rate=0, timeout=20.0)
    queue_config(retry_backoff_seconds=0.5)
    beat("w-dead", 60)
    claimed(user, start=True)
    last_update = timezone.now() - dt.timedelta(seconds=5)
    SubTask.objects.update(updated_at=last_update)

    assert dict(FailureRecoveryService().run().counts) == {"dead_worker.retried": 1}

    # Three socket timeouts of 20 s after the claim's last update, whatever the retry back-off says.
    assert SubTask.objects.get().next_attempt_at == last_update + dt.timedelta(seconds=60)


def test_after_a_dead_worker_an_unknown_outcome_waits_only_for_the_send(service, user, queue_config):
    queue_config(retry_backoff_seconds=60)
    beat("w-dead", 60)
    claimed(user, start=True)
    SubTask.objects.update(updated_at=timezone.now() - dt.timedelta(seconds=40))  # 3 x 10 s ended already

    recovery = FailureRecoveryService()
    assert dict(recovery.run().counts) == {"dead_worker.retried": 1}

    assert SubTask.objects.get().next_attempt_at == recovery.now


@pytest.mark.parametrize(
    ("timeout", "minutes_ago", "recovered"),
    [
        pytest.param(10.0, 11, True, id="10s-timeout-after-11-min"),
        pytest.param(600.0, 11, False, id="600s-timeout-still-sending-after-11-min"),
        pytest.param(600.0, 30, False, id="600s-timeout-still-sending-after-30-min"),
        pytest.param(600.0, 32, True, id="600s-timeout-after-32-min"),
    ],
)
def test_the_timeout_rule_never_resets_a_send_that_can_still_be_under_way(
    email_service_factory, user, timeout, minutes_ago, recovered
):
    email_service_factory(sending_rate=0, timeout=timeout)
    beat("w-live", 0)
    claimed(user, worker="w-live", start=True)
    SubTask.objects.update(updated_at=timezone.now() - dt.timedelta(minutes=minutes_ago))

    counts = dict(FailureRecoveryService().run().counts)

    assert counts == ({"timeout.retried": 1} if recovered else {})
    assert SubTask.objects.get().status == ("pending" if recovered else "processing")


def test_a_requeued_allocated_claim_refunds_its_quota_once(email_service_factory, user):
    service = email_service_factory(sending_rate=0, daily_quota=10)
    beat("w-dead", 60)
    claimed(user, 3)
    service.refresh_from_db()
    assert service.used_quota == 3

    assert dict(FailureRecoveryService().run().counts) == {"dead_worker.requeued": 3}
    assert dict(FailureRecoveryService().run().counts) == {}

    service.refresh_from_db()
    assert service.used_quota == 0


def test_a_started_claim_keeps_its_quota_charge(email_service_factory, user):
    service = email_service_factory(sending_rate=0, daily_quota=10)
    beat("w-dead", 60)
    claimed(user, 2, start=True)

    FailureRecoveryService().run()

    service.refresh_from_db()
    assert service.used_quota == 2  # the mail may have gone out: the charge stands


def test_a_claim_from_yesterday_refunds_nothing_from_today(email_service_factory, user):
    service = email_service_factory(sending_rate=0, daily_quota=10)
    beat("w-dead", 60)
    claimed(user)
    yesterday = timezone.now() - dt.timedelta(days=1)
    SubTask.objects.update(claimed_at=yesterday, updated_at=yesterday)
    EmailService.objects.filter(pk=service.pk).update(used_quota=4, quota_date=timezone.now().date())

    assert dict(FailureRecoveryService().run().counts) == {"dead_worker.requeued": 1}

    service.refresh_from_db()
    assert service.used_quota == 4


def test_recovery_leaves_a_dead_workers_rate_slots_as_they_are(email_service_factory, user):
    # Slots are at most two seconds ahead, and one of them may have started: the
    # service's next free moment stays past the last one handed out.
    service = email_service_factory(sending_rate=5.0)
    beat("w-dead", 60)
    claimed(user, start=True)
    service.refresh_from_db()
    free_at = service.next_available_at
    SubTask.objects.update(updated_at=timezone.now() - dt.timedelta(seconds=3600))

    assert FailureRecoveryService().run().counts

    service.refresh_from_db()
    assert service.next_available_at == free_at
