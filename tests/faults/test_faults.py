"""Fault injection: kills, a database restart, an SMTP server down or slow — nothing may be lost.

PostgreSQL, a real SMTP server (aiosmtpd) and three or more real scheduler
processes. Each scenario adds a row to the table printed at the end of the
run (and to var/fault-report.txt). FAULT_SCALE=large runs them bigger.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from config.services import get_config_by_category
from monitoring.models import Alert, WorkerHeartbeat
from queues.models import EmailService, SendAttempt, SubTask
from queues.recovery import FailureRecoveryService, RecoveryReport
from queues.scheduler.claim import claim_subtasks, claims_start
from queues.scheduler.outcomes import OutcomeRecorder, SendResult
from queues.scheduler.transports import SENT, Delivery
from queues.services import task_create
from tests.faults.harness import (
    ScenarioResult,
    TarPit,
    all_terminal,
    check_delivery,
    check_rate_and_quota,
    configure_for_faults,
    make_services,
    queue_mail,
    record,
    recovered_count,
    size,
    statuses,
    wait_for,
)

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

# The schedulers run the recovery sweeps themselves, whether or not a Celery
# broker is configured (with one, production leaves them to Celery beat and a
# worker, which these scenarios do not start).
SELF_CONTAINED = ("--maintenance", "on")


def in_flight_of(worker_id: str) -> int:
    return SubTask.objects.filter(status__in=SubTask.CLAIMED, claimed_by=worker_id).count()


def note_recoveries(waiting: dict[str, float], recover_times: list[float]) -> None:
    """A killed worker's claims are back in play: note how long that took."""
    for worker, killed_at in list(waiting.items()):
        if in_flight_of(worker) == 0:
            recover_times.append(time.monotonic() - killed_at)
            del waiting[worker]


def test_kill_9_a_random_scheduler_every_few_seconds(smtp_sink, email_service_factory, user_factory, schedulers):
    configure_for_faults()
    total = size(5_000, 50_000)
    # 125 mails/s at small scale (500 at large): the ten kills, 2.5 s apart, all
    # fall while the queue is still draining.
    services = make_services(email_service_factory, smtp_sink.port, 10, sending_rate=size(0.08, 0.02))
    queue_mail(user_factory, total, users=50)
    smtp_sink.latency = 0.005
    for _ in range(3):
        schedulers.start_one(*SELF_CONTAINED, "--concurrency", "3")

    rng = random.Random(11)
    kills, in_flight_at_kills, recover_times, last_kill = 0, 0, [], 0.0
    waiting: dict[str, float] = {}  # killed worker -> when
    deadline = time.monotonic() + size(300, 1800)
    while time.monotonic() < deadline and kills < 10 and not all_terminal():
        time.sleep(0.2)
        note_recoveries(waiting, recover_times)
        if time.monotonic() - last_kill <= 2.5 or smtp_sink.count() <= 100:
            continue
        # The kill that matters lands mid-send: the victim holds claims.
        busy = [p for p in schedulers.running() if in_flight_of(p.worker_id) > 0]
        if not busy:
            continue
        victim = rng.choice(busy)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        waiting[victim.worker_id] = last_kill = time.monotonic()
        # What the dead worker still holds is exactly what was in flight when it
        # died (recovery waits recovery.worker_dead_seconds before it touches it).
        in_flight_at_kills += in_flight_of(victim.worker_id)
        kills += 1
        schedulers.start_one(*SELF_CONTAINED, "--concurrency", "3")
    assert kills == 10, f"the queue drained after {kills} kills; make it bigger"

    def recovered_all() -> bool:
        note_recoveries(waiting, recover_times)
        return not waiting

    wait_for(recovered_all, timeout=60, what="recovery of the killed workers' claims")
    # The rest drains at the services' pace (one send in flight per service):
    # about 50 mails/s here.
    wait_for(all_terminal, timeout=size(300, 3600), what="every subtask terminal")
    survivors = schedulers.running()
    schedulers.terminate()
    assert [p.returncode for p in survivors] == [0] * len(survivors), schedulers.logs()

    delivery = check_delivery(smtp_sink)
    recovered = recovered_count()
    record(
        ScenarioResult(
            "kill -9 every 2.5 s (10 kills)",
            total,
            delivery.sent,
            delivery.lost,
            delivery.duplicates,
            recovered,
            f"max {max(recover_times):.1f} s" if recover_times else "-",
            f"{in_flight_at_kills} sends in flight at the kills",
        )
    )
    assert statuses() == {"sent": total}
    assert delivery.lost == 0
    assert delivery.duplicates <= in_flight_at_kills
    assert recovered > 0
    assert len(recover_times) == 10
    assert max(recover_times) < 60  # a dead worker's claims are back in play within a minute
    check_rate_and_quota(smtp_sink, services)


def test_a_kill_after_the_claim_before_smtp_sends_once_through_another_worker(
    smtp_sink, email_service_factory, user, schedulers
):
    configure_for_faults({("queue", "send_lease_seconds"): 120})
    tarpit = TarPit()
    try:
        # Long enough to kill the victim mid-greeting; recovery retries three timeouts after the claim started.
        (service,) = make_services(email_service_factory, tarpit.port, 1, timeout=5.0, sending_rate=0)
        task = task_create(owner=user, name="one", subject="s", body_text="b", recipients=["only@example.org"])
        victim = schedulers.start_one(*SELF_CONTAINED, "--concurrency", "1", worker_id="victim")
        wait_for(lambda: tarpit.held and in_flight_of("victim") == 1, timeout=30, what="a claim stuck before SMTP")
        assert SubTask.objects.get().status == "processing"  # claimed; the server never even said hello
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = time.monotonic()
        service.port = smtp_sink.port  # the service is fine again
        service.save()
        schedulers.start_one(*SELF_CONTAINED, "--concurrency", "1", worker_id="rescuer-1")
        schedulers.start_one(*SELF_CONTAINED, "--concurrency", "1", worker_id="rescuer-2")
        took = wait_for(lambda: SubTask.objects.get().status == "sent", timeout=60, what="the mail sent")
    finally:
        tarpit.close()

    delivery = check_delivery(smtp_sink)
    sub = task.subtasks.get()
    senders = set(SendAttempt.objects.filter(subtask=sub, outcome="sent").values_list("worker_id", flat=True))
    record(
        ScenarioResult(
            "kill after claim, before SMTP",
            1,
            delivery.sent,
            delivery.lost,
            delivery.duplicates,
            recovered_count(),
            f"{took:.1f} s",
        )
    )
    assert [r.message_id for r in smtp_sink.snapshot()] == [sub.message_id]  # once, and no duplicate
    assert senders <= {"rescuer-1", "rescuer-2"} and len(senders) == 1
    assert time.monotonic() - killed_at < 60


def test_recovery_racing_a_completion_leaves_the_sent_subtask_sent(email_service_factory, user):
    configure_for_faults()
    make_services(email_service_factory, 25, 1, sending_rate=0)
    task_create(owner=user, name="race", subject="s", body_text="b", recipients=["a@example.org"])
    claim = claim_subtasks(worker_id="gone", limit=1, queue_config=get_config_by_category("queue"))
    claims_start(token=claim.token, ids=[claim.items[0].id])
    long_ago = timezone.now() - dt.timedelta(minutes=5)
    WorkerHeartbeat.objects.create(worker_id="gone", hostname="h", pid=1, started_at=long_ago, last_seen_at=long_ago)
    recovery = FailureRecoveryService()  # "gone" stopped beating: a dead worker

    candidates = recovery.find_candidates()  # recovery reads
    now = timezone.now()
    OutcomeRecorder(worker_id="gone").record(  # the send completes
        [
            SendResult(
                item=claim.items[0],
                token=claim.token,
                delivery=Delivery(SENT, 250, "ok"),
                started_at=now,
                finished_at=now,
                rate=0,
            )
        ],
        queue_config=get_config_by_category("queue"),
    )
    report = RecoveryReport(dry_run=False)
    recovery.apply(candidates, report)  # recovery writes

    record(
        ScenarioResult(
            "recovery racing a completion",
            1,
            SubTask.objects.filter(status="sent").count(),
            0,
            0,
            0,
            "-",
            "the compare-and-set refused the stale reset",
        )
    )
    assert [c.rule for c in candidates] == ["dead_worker"]
    assert dict(report.counts) == {"dead_worker.already_done": 1}
    assert SubTask.objects.get().status == "sent"


def restart_postgres() -> None:
    version = sorted(Path("/etc/postgresql").iterdir())[0].name
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, capture_output=True
    )


def test_a_postgresql_restart_mid_run(smtp_sink, email_service_factory, user_factory, schedulers):
    configure_for_faults()
    total = size(3_000, 30_000)
    services = make_services(email_service_factory, smtp_sink.port, 5)
    queue_mail(user_factory, total, users=20)
    smtp_sink.latency = 0.005
    schedulers.start(3, *SELF_CONTAINED, "--concurrency", "2", "--until-empty")
    wait_for(lambda: smtp_sink.count() >= total // 5, timeout=120, what="a fifth sent")

    in_flight = SubTask.objects.filter(status__in=SubTask.CLAIMED).count()
    connection.close()
    restart_postgres()
    restarted = time.monotonic()
    before = smtp_sink.count()
    # Sends under way at the restart finish; after that, new ones show the schedulers carried on.
    took = wait_for(lambda: smtp_sink.count() > before + 50, timeout=120, what="sending to go on")
    assert schedulers.wait(timeout=size(300, 1800)) == [0, 0, 0], schedulers.logs()

    delivery = check_delivery(smtp_sink)
    record(
        ScenarioResult(
            "PostgreSQL restart mid-run",
            total,
            delivery.sent,
            delivery.lost,
            delivery.duplicates,
            recovered_count(),
            f"{took:.1f} s",
            f"{in_flight} claims under way at the restart",
        )
    )
    assert statuses() == {"sent": total}
    assert delivery.lost == 0
    assert delivery.duplicates <= in_flight
    assert time.monotonic() - restarted < size(300, 1800)
    check_rate_and_quota(smtp_sink, services)


def test_the_smtp_server_down_for_20_seconds(smtp_sink, email_service_factory, user_factory, schedulers):
    configure_for_faults()
    total = size(2_000, 20_000)
    services = make_services(email_service_factory, smtp_sink.port, 3)
    queue_mail(user_factory, total, users=10)
    smtp_sink.latency = 0.01
    schedulers.start(3, *SELF_CONTAINED, "--concurrency", "2", "--until-empty")
    wait_for(lambda: smtp_sink.count() >= total // 4, timeout=120, what="a quarter sent")

    smtp_sink.stop()  # down, open sessions cut
    in_flight = SubTask.objects.filter(status__in=SubTask.CLAIMED).count()
    down_for = wait_for(
        lambda: Alert.objects.filter(alert_type="service_failing", status="open").exists(),
        timeout=20,
        what="an alert while the server is down",
    )
    time.sleep(max(0, 20 - down_for))
    assert EmailService.objects.filter(backoff_level__gt=0).exists()  # the services backed off
    at_restart = smtp_sink.count()
    smtp_sink.start()
    back = time.monotonic()
    took = wait_for(lambda: smtp_sink.count() > at_restart, timeout=60, what="the first mail after the outage")
    assert schedulers.wait(timeout=size(300, 1800)) == [0, 0, 0], schedulers.logs()

    delivery = check_delivery(smtp_sink)
    record(
        ScenarioResult(
            "SMTP server down 20 s",
            total,
            delivery.sent,
            delivery.lost,
            delivery.duplicates,
            recovered_count(),
            f"{took:.1f} s",
            "alert raised and resolved",
        )
    )
    assert statuses() == {"sent": total}
    assert delivery.lost == 0
    assert delivery.duplicates <= in_flight  # only mails the server had taken when it went down
    assert not Alert.objects.filter(alert_type="service_failing").exclude(status="resolved").exists()
    assert Alert.objects.filter(alert_type="service_failing", status="resolved").exists()
    assert time.monotonic() - back < size(300, 1800)
    check_rate_and_quota(smtp_sink, services)


def test_a_slow_smtp_server_never_gets_two_concurrent_sends_of_one_subtask(
    smtp_sink, email_service_factory, user_factory, schedulers
):
    configure_for_faults()
    total = size(300, 3_000)
    services = make_services(email_service_factory, smtp_sink.port, 2, timeout=1.0)
    queue_mail(user_factory, total, users=5)
    schedulers.start(3, *SELF_CONTAINED, "--concurrency", "2", "--until-empty")
    wait_for(lambda: smtp_sink.count() >= 20, timeout=60, what="first sends")

    smtp_sink.latency = 2.5  # the final reply comes after the client's 1 s timeout
    slow_from = time.monotonic()
    time.sleep(6)
    smtp_sink.latency = 0
    took = wait_for(lambda: SubTask.objects.filter(status="sent").count() > 40, timeout=120, what="progress")
    assert schedulers.wait(timeout=size(300, 1800)) == [0, 0, 0], schedulers.logs()

    delivery = check_delivery(smtp_sink)
    overlaps = 0
    by_id: dict[str, list] = {}
    for r in smtp_sink.snapshot():
        by_id.setdefault(r.message_id, []).append(r)
    for copies in by_id.values():
        copies.sort(key=lambda r: r.started_at)
        overlaps += sum(1 for a, b in itertools.pairwise(copies) if b.started_at < a.replied_at)
    record(
        ScenarioResult(
            "slow SMTP server (reply > timeout)",
            total,
            delivery.sent,
            delivery.lost,
            delivery.duplicates,
            recovered_count(),
            f"{time.monotonic() - slow_from:.1f} s",
            f"{overlaps} overlapping sends of one Message-ID",
        )
    )
    assert statuses() == {"sent": total}
    assert delivery.lost == 0
    assert delivery.duplicates > 0  # the server kept what it answered too late: visible, same Message-ID
    assert overlaps == 0
    assert took < 120
    check_rate_and_quota(smtp_sink, services)
