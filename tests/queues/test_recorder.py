"""The scheduler's recorder: it never wedges, applies each outcome once, and a stuck worker is seen.

The database refuses writes here through real triggers (PostgreSQL), the way
a constraint, a bad value or a dropped connection would.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from config.services import ConfigManagerService, get_config_by_category
from monitoring.models import Alert
from monitoring.services.health import system_health
from queues.models import EmailService, SendAttempt, SubTask, Task, WorkerHeartbeat
from queues.recovery import FailureRecoveryService
from queues.scheduler.claim import claim_subtasks
from queues.scheduler.outcomes import OutcomeRecorder, SendResult
from queues.scheduler.transports import PERMANENT, SENT, Delivery
from queues.scheduler.worker import Release, SchedulerWorker
from queues.services import task_create
from tests.metrics_auth import METRICS_AUTH
from tests.processes import skewed_clock
from tests.schedulers import wait_until

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

OK = Delivery(SENT, 250, "2.0.0 queued")


@pytest.fixture
def refuse():
    """``refuse(table, condition, errcode, once=False)``: a trigger that makes the database refuse writes."""
    created = []

    def install(table: str, condition: str, errcode: str, *, once: bool = False) -> None:
        name = f"test_refuse_{table}"
        if once:
            condition = f"({condition}) AND nextval('{name}_seq') = 1"
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE SEQUENCE IF NOT EXISTS {name}_seq")
            cursor.execute(
                f"""CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF {condition} THEN
                        RAISE EXCEPTION 'refused by test trigger' USING ERRCODE = '{errcode}';
                    END IF;
                    RETURN NEW;
                END $$"""
            )
            cursor.execute(
                f"CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()"
            )
        created.append((table, name))

    yield install
    with connection.cursor() as cursor:
        for table, name in created:
            cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            cursor.execute(f"DROP FUNCTION IF EXISTS {name}()")
            cursor.execute(f"DROP SEQUENCE IF EXISTS {name}_seq")


def claim(owner, n: int, worker_id: str = "w1"):
    task_create(owner=owner, name="t", subject="s", body_text="b", recipients=[f"r{i}@x.example" for i in range(n)])
    return claim_subtasks(worker_id=worker_id, limit=n, queue_config=get_config_by_category("queue"))


def result(claimed, item, delivery: Delivery) -> SendResult:
    finished = timezone.now()
    return SendResult(
        item=item,
        token=claimed.token,
        delivery=delivery,
        started_at=finished - dt.timedelta(milliseconds=30),
        finished_at=finished,
        rate=0.0,
    )


def test_an_outcome_the_database_refuses_is_set_aside_and_the_rest_recorded(email_service_factory, user, refuse):
    service = email_service_factory(sending_rate=0)
    claimed = claim(user, 4)
    refuse("send_attempts", "NEW.smtp_reply LIKE '%poison%'", "23514")  # a check constraint's error
    poisoned = claimed.items[2]
    results = [
        result(claimed, item, Delivery(PERMANENT, 550, "poison") if item == poisoned else OK) for item in claimed.items
    ]
    recorder = OutcomeRecorder(worker_id="w1")
    config = get_config_by_category("queue")

    summary = recorder.record(results, queue_config=config)
    recorder.finish(summary, queue_config=config)

    assert (summary.sent, summary.failed, summary.stale) == (3, 0, 1)
    assert Counter(SubTask.objects.values_list("status", flat=True)) == {"sent": 3, "parked": 1}
    parked = SubTask.objects.get(status="parked")
    assert parked.pk == poisoned.id
    assert parked.claim_token is None
    assert parked.error_message.startswith("Outcome could not be recorded (permanent 550 poison): IntegrityError:")
    assert SendAttempt.objects.count() == 3
    service.refresh_from_db()
    assert (service.total_sent, service.total_failed) == (3, 0)
    alert = Alert.objects.get(alert_type="outcome_unrecordable")
    assert (alert.severity, alert.subject, alert.status) == ("critical", f"subtask:{poisoned.id}", "open")


def test_a_give_back_failing_once_after_the_record_committed_records_the_batch_once(
    email_service_factory, user, refuse
):
    service = email_service_factory(sending_rate=0)
    worker = SchedulerWorker(concurrency=1, worker_id="w1")
    claimed = claim(user, 2, worker_id="w1")
    sent, unsent = claimed.items
    # The give-back (allocated -> pending) fails once, as on a dropped connection.
    refuse("subtasks", "OLD.status = 'allocated' AND NEW.status = 'pending'", "57P01", once=True)
    worker._in_flight = 2
    worker._results.put(result(claimed, sent, OK))
    worker._results.put(Release(unsent, claimed.token))
    worker._senders_done.set()

    worker._recorder_loop()

    assert SendAttempt.objects.count() == 1
    service.refresh_from_db()
    assert (service.total_sent, service.total_failed, service.consecutive_failures) == (1, 0, 0)
    assert dict(SubTask.objects.values_list("pk", "status")) == {sent.id: "sent", unsent.id: "pending"}
    assert (worker.stats.sent, worker.stats.released, worker._in_flight) == (1, 1, 0)


# --- whole scheduler processes --------------------------------------------------------------


def make_task(owner, n: int, prefix: str):
    return task_create(
        owner=owner,
        name=prefix,
        subject="s",
        body_text="b",
        recipients=[f"{prefix}{i}@{owner.username}.example" for i in range(n)],
    )


def test_a_scheduler_whose_task_is_deleted_mid_send_goes_on_with_the_other_tasks(
    smtp_sink, email_service_factory, user_factory, queue_config, schedulers
):
    queue_config(claim_batch_size=1)
    email_service_factory(port=smtp_sink.port, sending_rate=0)
    doomed_owner, other_owner = user_factory.create_batch(2)
    smtp_sink.latency = 3  # the reply to DATA waits: the mail is in flight
    make_task(doomed_owner, 1, "doomed")
    (proc,) = schedulers.start(1, "--concurrency", "1")
    wait_until(lambda: smtp_sink.count() == 1, timeout=60, what="the doomed mail on the wire")

    Task.objects.filter(owner=doomed_owner).delete()
    smtp_sink.latency = 0
    make_task(other_owner, 5, "kept")

    wait_until(lambda: SubTask.objects.filter(status="sent").count() == 5, timeout=60, what="the other task sent")
    assert proc.poll() is None, schedulers.logs()
    assert sorted(r.recipient.split("@")[0] for r in smtp_sink.snapshot()) == [
        "doomed0",
        "kept0",
        "kept1",
        "kept2",
        "kept3",
        "kept4",
    ]
    assert SendAttempt.objects.count() == 5
    assert schedulers.terminate() == [0], schedulers.logs()


def test_a_worker_whose_recorder_is_stuck_is_stalled_in_health_and_metrics_and_its_claims_recovered(
    smtp_sink, email_service_factory, user, queue_config, schedulers, refuse, settings
):
    settings.CELERY_BROKER_URL = None
    queue_config(claim_batch_size=3)
    ConfigManagerService.set_config("recovery", "worker_dead_seconds", 6)
    email_service_factory(port=smtp_sink.port, sending_rate=0)
    refuse("send_attempts", "true", "57P01")  # every record fails as if the connection dropped
    make_task(user, 3, "r")
    (proc,) = schedulers.start(1, "--concurrency", "1")
    wait_until(lambda: smtp_sink.count() == 3, timeout=60, what="three mails sent")

    wait_until(
        lambda: system_health()["checks"]["schedulers"].get("stalled") == 1, timeout=60, what="the worker seen stalled"
    )
    schedulers_check = system_health()["checks"]["schedulers"]
    assert (schedulers_check["status"], schedulers_check["live"], schedulers_check["stalled_workers"]) == (
        "degraded",
        0,
        [proc.worker_id],
    )
    assert "edm_stalled_schedulers 1.0" in Client().get("/metrics", **METRICS_AUTH).content.decode().splitlines()
    beat = WorkerHeartbeat.objects.get(worker_id=proc.worker_id)
    assert (beat.stopped_at, beat.in_flight) == (None, 3)
    assert beat.recorder_failing_since is not None

    report = FailureRecoveryService().run(rules=("dead_worker",))

    assert dict(report.counts) == {"dead_worker.retried": 3}
    assert Counter(SubTask.objects.values_list("status", flat=True)) == {"pending": 3}
    # Signalled, it gives up on what it cannot record instead of hanging.
    assert schedulers.terminate(timeout=60) == [1], schedulers.logs()
    assert WorkerHeartbeat.objects.get(worker_id=proc.worker_id).stopped_at is not None
    assert EmailService.objects.get().total_sent == 0


def test_a_recorder_retrying_after_a_database_error_on_a_skewed_host_records_the_batch(
    smtp_sink, email_service_factory, user, queue_config, schedulers, refuse
):
    # Under a skewed wall clock the recorder's retry wait used to raise (libfaketime
    # makes time.sleep fail), which killed the recorder thread: the worker went on
    # claiming and sending what it could never record.
    queue_config(claim_batch_size=3)
    email_service_factory(port=smtp_sink.port, sending_rate=0)
    refuse("send_attempts", "true", "40P01", once=True)  # one deadlock, as two recorders can meet
    make_task(user, 3, "r")
    schedulers.start_one("--concurrency", "1", env=skewed_clock("-300s"))

    wait_until(lambda: SubTask.objects.filter(status="sent").count() == 3, timeout=60, what="three mails recorded")

    assert smtp_sink.count() == 3
    assert SendAttempt.objects.count() == 3
    assert schedulers.terminate(timeout=60) == [0], schedulers.logs()


def test_a_worker_whose_recorder_dies_stops_and_leaves_its_claims_to_recovery(
    smtp_sink, email_service_factory, user, queue_config, monkeypatch
):
    queue_config(claim_batch_size=3)
    email_service_factory(port=smtp_sink.port, sending_rate=0)
    make_task(user, 3, "r")

    def broken(self) -> None:
        raise RuntimeError("a bug in the recorder")

    monkeypatch.setattr(SchedulerWorker, "_recorder_loop", broken)
    worker = SchedulerWorker(concurrency=1, worker_id="w-broken")

    assert worker.run() == 1  # it stops by itself instead of sending what it cannot record
    beat = WorkerHeartbeat.objects.get(worker_id="w-broken")
    assert beat.stopped_at is not None  # so the dead-worker rule takes its claims back at once
