"""The scheduler's invariants, tried with several real scheduler processes, PostgreSQL and a real SMTP server."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections import Counter, defaultdict

import pytest
from django.utils import timezone

from monitoring.models import Alert
from queues.expansion import tasks_prepare
from queues.models import SendAttempt, SubTask, Task, WorkerHeartbeat
from queues.services import task_cancel, task_create, task_pause, task_resume
from tests.schedulers import wait_until

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def make_services(factory, sink, count, **fields):
    return [factory(name=f"svc-{i}", port=sink.port, from_email=f"svc{i}@edm.example", **fields) for i in range(count)]


def make_task(owner, n, *, prefix="r", **kwargs):
    task = task_create(
        owner=owner,
        name=kwargs.pop("name", f"task of {owner.username}"),
        subject="Hello {{ contact.first_name }}",
        body_text="Hi {{ contact.first_name }}, news for you.",
        recipients=[{"email": f"{prefix}{i}@{owner.username}.example", "first_name": f"R{i}"} for i in range(n)],
        **kwargs,
    )
    tasks_prepare(task_id=task.pk)  # over 1,000 recipients it would be prepared in the background
    task.refresh_from_db()
    return task


def statuses() -> Counter:
    return Counter(SubTask.objects.values_list("status", flat=True))


def test_no_two_sends_through_one_service_closer_than_its_sending_rate(
    smtp_sink, email_service_factory, user_factory, queue_config, schedulers
):
    queue_config(claim_batch_size=5)
    services = make_services(email_service_factory, smtp_sink, 3, sending_rate=0.3)
    for user in user_factory.create_batch(3):
        make_task(user, 15)

    schedulers.start(3, "--until-empty", "--concurrency", "2")
    assert schedulers.wait(timeout=120) == [0, 0, 0], schedulers.logs()

    arrivals = defaultdict(list)
    for record in smtp_sink.snapshot():
        arrivals[record.mail_from].append(record.started_at)  # MAIL FROM
    assert sum(len(v) for v in arrivals.values()) == 45
    assert set(arrivals) == {s.from_email for s in services}
    for sender, times in arrivals.items():
        times.sort()
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.3 - 0.002, (sender, min(gaps))  # 2 ms: the sink's own timestamps
    assert statuses() == {"sent": 45}


def test_a_service_sends_exactly_its_daily_quota(
    smtp_sink, email_service_factory, user_factory, queue_config, schedulers
):
    queue_config(claim_batch_size=20)
    (service,) = make_services(email_service_factory, smtp_sink, 1, sending_rate=0, daily_quota=100)
    for user in user_factory.create_batch(4):
        make_task(user, 250)

    schedulers.start(3, "--concurrency", "4")
    wait_until(lambda: smtp_sink.count() >= 100, timeout=60, what="100 mails")
    time.sleep(2)  # give the schedulers every chance to exceed the quota
    assert schedulers.terminate() == [0, 0, 0], schedulers.logs()

    assert smtp_sink.count() == 100
    service.refresh_from_db()
    assert (service.used_quota, service.total_sent) == (100, 100)
    assert statuses() == {"sent": 100, "pending": 900}


def test_every_subtask_ends_sent_and_each_message_id_arrives_exactly_once(
    smtp_sink, email_service_factory, user_factory, queue_config, schedulers
):
    make_services(email_service_factory, smtp_sink, 5, sending_rate=0)
    for user in user_factory.create_batch(20):
        make_task(user, 150)

    schedulers.start(3, "--until-empty", "--concurrency", "4")
    assert schedulers.wait(timeout=180) == [0, 0, 0], schedulers.logs()

    assert statuses() == {"sent": 3000}
    received = Counter(r.message_id for r in smtp_sink.snapshot())
    expected = set(SubTask.objects.values_list("message_id", flat=True))
    assert set(received) == expected
    assert max(received.values()) == 1
    assert SendAttempt.objects.filter(outcome="sent").count() == 3000
    assert set(Task.objects.values_list("status", flat=True)) == {"completed"}
    assert WorkerHeartbeat.objects.filter(stopped_at__isnull=False).count() == 3


def test_small_users_are_not_starved_by_a_big_one(
    smtp_sink, email_service_factory, user_factory, queue_config, schedulers
):
    # A window of one claim of one mail per process: the order mails leave in
    # is then the rotation's order (see README, Fairness).
    queue_config(claim_batch_size=1)
    make_services(email_service_factory, smtp_sink, 3, sending_rate=0)
    big, small_b, small_c = (user_factory(username=name) for name in ("big", "bee", "cee"))
    make_task(big, 10_000, prefix="a")
    make_task(small_b, 10, prefix="b")
    make_task(small_c, 10, prefix="c")

    schedulers.start(3, "--concurrency", "1")
    wait_until(lambda: smtp_sink.count() >= 40, timeout=60, what="40 mails")
    schedulers.terminate()

    first = sorted(smtp_sink.snapshot(), key=lambda r: r.received_at)[:35]
    domains = Counter(r.recipient.split("@")[1] for r in first)
    assert domains["bee.example"] == 10, domains
    assert domains["cee.example"] == 10, domains


def test_transient_and_permanent_failures_retry_back_off_and_fail(
    smtp_sink, email_service_factory, user_factory, queue_config, schedulers
):
    queue_config(max_retries=2, retry_backoff_seconds=0.3, service_failure_threshold=1000)
    make_services(email_service_factory, smtp_sink, 2, sending_rate=0)
    owner = user_factory(username="mixed")
    recipients = (
        [f"ok{i}@mixed.example" for i in range(10)]
        + [f"flaky{i}@mixed.example" for i in range(5)]  # 451 once, then accepted
        + [f"tempfail{i}@mixed.example" for i in range(3)]  # 451 every time
        + [f"permfail{i}@mixed.example" for i in range(2)]  # 550 at RCPT
        + ["datafail@mixed.example"]  # 554 after DATA
    )
    task = task_create(owner=owner, name="mixed", subject="s", body_text="b", recipients=recipients)

    schedulers.start(3, "--until-empty", "--concurrency", "2")
    assert schedulers.wait(timeout=120) == [0, 0, 0], schedulers.logs()

    by_local = {s.recipient_email.split("@")[0]: s for s in task.subtasks.all()}
    for i in range(10):
        assert (by_local[f"ok{i}"].status, by_local[f"ok{i}"].attempts) == ("sent", 1)
    for i in range(5):
        assert (by_local[f"flaky{i}"].status, by_local[f"flaky{i}"].attempts) == ("sent", 2)
    for i in range(3):
        sub = by_local[f"tempfail{i}"]
        assert (sub.status, sub.attempts) == ("failed", 3)  # the first try and two retries
        assert sub.error_message.startswith("451 ")
        times = list(sub.attempts_log.order_by("started_at").values_list("started_at", flat=True))
        assert len(times) == 3
        # Exponential back-off: 0.3 s, then 0.6 s.
        assert (times[1] - times[0]).total_seconds() >= 0.3
        assert (times[2] - times[1]).total_seconds() >= 0.6
    for i in range(2):
        sub = by_local[f"permfail{i}"]
        assert (sub.status, sub.attempts) == ("failed", 1)
        assert sub.error_message.startswith("550 5.1.1")
    assert by_local["datafail"].status == "failed"
    assert by_local["datafail"].error_message.startswith("554 5.7.1")
    assert SendAttempt.objects.filter(subtask=by_local["datafail"]).get().smtp_code == 554
    task.refresh_from_db()
    assert task.status == "completed"


def test_a_failing_service_backs_off_raises_an_alert_and_comes_back(
    smtp_sink, email_service_factory, user_factory, queue_config, schedulers
):
    queue_config(max_retries=10, retry_backoff_seconds=0.2, service_failure_threshold=3, service_backoff_seconds=1)
    (service,) = make_services(email_service_factory, smtp_sink, 1, sending_rate=0)
    make_task(user_factory(), 30)
    smtp_sink.mode = "tempfail"

    schedulers.start(3, "--until-empty", "--concurrency", "2")
    wait_until(
        lambda: Alert.objects.filter(alert_type="service_failing", status="open").exists(), timeout=30, what="alert"
    )
    service.refresh_from_db()
    assert service.consecutive_failures >= 3
    assert service.next_available_at is not None
    smtp_sink.mode = "ok"
    assert schedulers.wait(timeout=120) == [0, 0, 0], schedulers.logs()

    assert statuses() == {"sent": 30}
    alert = Alert.objects.get(alert_type="service_failing")
    assert alert.status == "resolved"
    service.refresh_from_db()
    assert service.consecutive_failures == 0


def test_pause_stops_claims_resume_continues_and_cancel_cancels(
    smtp_sink, email_service_factory, user_factory, queue_config, schedulers
):
    queue_config(claim_batch_size=2, no_work_sleep_seconds=0.2)
    make_services(email_service_factory, smtp_sink, 1, sending_rate=0.05)
    paused_owner, cancelled_owner, other_owner = user_factory.create_batch(3)
    paused = make_task(paused_owner, 60, prefix="p")
    cancelled = make_task(cancelled_owner, 60, prefix="c")
    make_task(other_owner, 150, prefix="o")  # goes on all along: shows the schedulers kept claiming

    def arrived(owner) -> int:
        return sum(1 for r in smtp_sink.snapshot() if r.recipient.endswith(f"@{owner.username}.example"))

    schedulers.start(3, "--concurrency", "1")
    wait_until(lambda: smtp_sink.count() >= 10, timeout=30, what="first sends")
    task_pause(task=paused)
    cancelled_count = task_cancel(task=cancelled)
    # Sends already under way finish (or their claims are given back); after that nothing more of either leaves,
    # however long the schedulers go on claiming and sending the other task.
    wait_until(
        lambda: not SubTask.objects.filter(task__in=[paused, cancelled], status__in=SubTask.CLAIMED).exists(),
        timeout=30,
        what="the paused and cancelled tasks' claims to settle",
    )
    at_pause = (arrived(paused_owner), arrived(cancelled_owner))
    others_then = arrived(other_owner)
    wait_until(lambda: arrived(other_owner) >= others_then + 30, timeout=60, what="30 more mails of the other task")
    assert (arrived(paused_owner), arrived(cancelled_owner)) == at_pause

    task_resume(task=paused)
    wait_until(lambda: SubTask.objects.filter(task=paused).exclude(status="sent").count() == 0, timeout=60)
    assert schedulers.terminate() == [0, 0, 0], schedulers.logs()

    received = Counter(r.message_id for r in smtp_sink.snapshot())
    assert max(received.values()) == 1  # resume re-sent nothing
    assert SubTask.objects.filter(task=paused, status="sent").count() == 60
    cancelled_statuses = Counter(cancelled.subtasks.values_list("status", flat=True))
    # task_cancel counts the pending ones; a mail claimed at that moment and given back
    # unsent (its slot missed, say) is cancelled afterwards: never sent, never pending again.
    assert cancelled_statuses["cancelled"] >= cancelled_count
    assert cancelled_statuses["sent"] + cancelled_statuses["cancelled"] == 60
    assert cancelled_statuses["sent"] == arrived(cancelled_owner)
    paused.refresh_from_db()
    cancelled.refresh_from_db()
    assert (paused.status, cancelled.status) == ("completed", "cancelled")


def test_sigterm_finishes_and_records_the_sends_in_flight(
    smtp_sink, email_service_factory, user_factory, queue_config, schedulers
):
    smtp_sink.latency = 1.0  # every send is in flight for a second
    make_services(email_service_factory, smtp_sink, 2, sending_rate=0)
    make_task(user_factory(), 200)

    schedulers.start(3, "--concurrency", "4")
    wait_until(lambda: WorkerHeartbeat.objects.count() == 3, timeout=30, what="three running schedulers")

    def awaiting_reply() -> set[str]:
        """Mails the server has taken and not yet answered: sends under way right now."""
        now = time.time()
        return {r.message_id for r in smtp_sink.snapshot() if r.replied_at > now}

    # (A claimed batch is marked processing before each of its mails is handed to
    # a sender, so the subtask statuses cannot tell what is on the wire; the server can.)
    wait_until(lambda: len(awaiting_reply()) >= 6, timeout=30, what="six sends under way")
    under_way = awaiting_reply()
    started = time.monotonic()
    assert schedulers.terminate(timeout=30) == [0, 0, 0], schedulers.logs()
    assert time.monotonic() - started < 10

    counts = statuses()
    assert set(counts) <= {"sent", "pending"}, counts  # nothing left claimed
    assert counts["sent"] == smtp_sink.count() >= 6
    sent_ids = set(SubTask.objects.filter(status="sent").values_list("message_id", flat=True))
    assert len(under_way) >= 6 and under_way <= sent_ids  # every send under way finished and was recorded
    assert counts["sent"] + counts["pending"] == 200
    assert SendAttempt.objects.count() == counts["sent"]
    assert WorkerHeartbeat.objects.filter(stopped_at__isnull=False).count() == 3


def test_only_mails_on_the_wire_are_processing_and_a_kill_parks_only_those(
    smtp_sink, email_service_factory, user_factory, queue_config, schedulers
):
    """processing = the SMTP conversation may have started; the rest of a claimed batch stays allocated."""
    from config.services import ConfigManagerService
    from queues.recovery import FailureRecoveryService

    queue_config(claim_batch_size=20)
    ConfigManagerService.set_config("recovery", "unknown_outcome", "park")
    smtp_sink.latency = 0.5  # each send holds its sender for half a second
    make_services(email_service_factory, smtp_sink, 1, sending_rate=0)
    make_task(user_factory(), 60)

    victim = schedulers.start_one("--concurrency", "2", worker_id="victim")
    most_processing, saw_allocated = 0, False
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        counts = statuses()
        most_processing = max(most_processing, counts["processing"])
        saw_allocated |= counts["allocated"] > 0
        time.sleep(0.02)
    assert saw_allocated  # the claimed batch waits in the process, allocated
    # Two senders under way, the four mails ready behind them (twice the
    # senders) and the two sent just before, being recorded; never the twenty
    # of a claimed batch.
    assert 1 <= most_processing <= 8

    wait_until(lambda: statuses()["processing"] >= 1, timeout=10, what="a send under way")
    victim.kill()
    victim.wait()
    held = statuses()
    WorkerHeartbeat.objects.filter(worker_id="victim").update(last_seen_at=timezone.now() - dt.timedelta(hours=1))

    counts = FailureRecoveryService().run().counts
    assert counts["dead_worker.parked"] == held["processing"]
    assert counts["dead_worker.requeued"] == held["allocated"]
    after = statuses()
    assert (after["parked"], after["pending"]) == (held["processing"], held["pending"] + held["allocated"])
    # Parked: mails the server took (no outcome recorded) or that a sender was talking over.
    received = {r.message_id for r in smtp_sink.snapshot()}
    parked = set(SubTask.objects.filter(status="parked").values_list("message_id", flat=True))
    assert len(parked - received) <= 2 + 4  # under way, or ready for a sender
    assert not received & set(SubTask.objects.filter(status="pending").values_list("message_id", flat=True))
