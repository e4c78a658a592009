"""Fault injection: kills, a database restart, an SMTP server down or slow — nothing may be lost.

PostgreSQL, a real SMTP server (aiosmtpd) and three or more real scheduler
processes. Each scenario adds a row to the table printed at the end of the
run (and to var/fault-report.txt). FAULT_SCALE=large runs them bigger.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import multiprocessing
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from config.services import get_config_by_category
from monitoring.models import Alert
from queues.models import EmailService, SendAttempt, SubTask, WorkerHeartbeat
from queues.recovery import FailureRecoveryService, RecoveryReport
from queues.scheduler.claim import ClaimedSubTask, claim_subtasks, claims_start
from queues.scheduler.outcomes import OutcomeRecorder, SendResult
from queues.scheduler.transports import SENT, Delivery
from queues.services import task_create
from tests.faults.harness import (
    SELF_CONTAINED,
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
from tests.faults.pgcluster import ThrowawayCluster, close_default_connection, postmaster_started, throwaway_cluster
from tests.processes import run_in_processes
from tests.schedulers import Schedulers

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


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
        service.port = smtp_sink.port  # the service is fine again
        service.save()
        schedulers.start_one(*SELF_CONTAINED, "--concurrency", "1", worker_id="rescuer-1")
        schedulers.start_one(*SELF_CONTAINED, "--concurrency", "1", worker_id="rescuer-2")
        took = wait_for(lambda: SubTask.objects.get().status == "sent", timeout=60, what="the mail sent")
    finally:
        tarpit.close()

    delivery = check_delivery(smtp_sink)
    sub = task.subtasks.get()
    sends = list(SendAttempt.objects.filter(subtask=sub).values_list("worker_id", "outcome", "started_at"))
    last_beat = WorkerHeartbeat.objects.get(worker_id="victim").last_seen_at
    dead_after = dt.timedelta(seconds=get_config_by_category("recovery")["worker_dead_seconds"])
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
    assert len(sends) == 1 and sends[0][0] in {"rescuer-1", "rescuer-2"} and sends[0][1] == "sent"
    # Nobody took the claim over while the victim could still have been alive.
    assert sends[0][2] >= last_beat + dead_after
    # The victim's attempt counted (its outcome is unknown to the scheduler), then the rescuer's.
    assert (sub.status, sub.attempts) == ("sent", 2)
    assert recovered_count() == 1


def race_side(side: str, rounds: list[tuple[str, str, str, dict]], barrier: Any) -> list[tuple]:
    """In a process of its own: one side of every round, on the database's clock.

    ``recover`` runs the dead-worker rule on the round's claim (read, then a
    compare-and-set); ``record`` writes the claim's completed send, as the
    worker's recorder would. Returns (written, began, ended) per round.
    """
    import random

    from django.db import connection, transaction

    def db_now() -> dt.datetime:
        with connection.cursor() as cursor:
            cursor.execute("SELECT clock_timestamp()")
            return cursor.fetchone()[0]

    jitter = random.Random(side)
    queue_config = get_config_by_category("queue")
    done = []
    for subtask_id, token, worker, item in rounds:
        barrier.wait(timeout=60)
        # Not synchronisation: a few milliseconds either way let either side go first.
        time.sleep(jitter.uniform(0, 0.015))
        began = db_now()
        if side == "recover":
            recovery = FailureRecoveryService()
            report = RecoveryReport(dry_run=False)
            candidates = [c for c in recovery.find_candidates(("dead_worker",)) if str(c.id) == subtask_id]
            with transaction.atomic():
                recovery.apply(candidates, report)
            written = sum(n for key, n in report.counts.items() if not key.endswith("already_done"))
        else:
            now = timezone.now()
            result = SendResult(
                item=ClaimedSubTask(**item),
                token=uuid.UUID(token),
                delivery=Delivery(SENT, 250, "ok"),
                started_at=now,
                finished_at=now,
                rate=0,
            )
            recorder = OutcomeRecorder(worker_id=worker)
            summary = recorder.record([result], queue_config=queue_config)
            recorder.finish(summary, queue_config=queue_config)
            written = summary.sent
        done.append((written, began, db_now()))
    return done


def test_recovery_racing_a_completion_never_reverts_a_sent_subtask_nor_writes_twice(email_service_factory, user):
    configure_for_faults()
    make_services(email_service_factory, 25, 1, sending_rate=0)  # nothing is sent: the race is in the database
    total = size(30, 200)
    task_create(
        owner=user, name="race", subject="s", body_text="b", recipients=[f"r{i}@example.org" for i in range(total)]
    )
    long_ago = timezone.now() - dt.timedelta(minutes=5)
    rounds = []
    for i in range(total):
        # Each claim is processing, held by a worker that stopped beating: a dead worker's send, just completed.
        claim = claim_subtasks(worker_id=f"gone-{i}", limit=1, queue_config=get_config_by_category("queue"))
        (item,) = claim.items
        assert claims_start(token=claim.token, ids=[item.id]) == {item.id}
        WorkerHeartbeat.objects.create(
            worker_id=f"gone-{i}", hostname="h", pid=1, started_at=long_ago, last_seen_at=long_ago
        )
        rounds.append((str(item.id), str(claim.token), f"gone-{i}", dataclasses.asdict(item)))

    with multiprocessing.get_context("spawn").Manager() as manager:
        barrier = manager.Barrier(2)
        recovered, recorded = run_in_processes(
            race_side, [("recover", rounds, barrier), ("record", rounds, barrier)], timeout=size(300, 1200)
        )

    subtasks = {str(s.id): s for s in SubTask.objects.all()}
    overlapped = recovery_first = recorder_first = 0
    for (subtask_id, *_), (by_recovery, r_began, r_ended), (by_recorder, w_began, w_ended) in zip(
        rounds, recovered, recorded, strict=True
    ):
        sub = subtasks[subtask_id]
        assert by_recovery + by_recorder == 1, (subtask_id, by_recovery, by_recorder)  # one side wrote, once
        if by_recorder:
            recorder_first += 1
            assert (sub.status, sub.attempts, sub.claim_token) == ("sent", 1, None)
        else:
            recovery_first += 1
            assert (sub.status, sub.attempts, sub.claim_token) == ("pending", 1, None)
            assert sub.error_message.endswith("outcome unknown, retried with the same Message-ID")
        overlapped += r_began < w_ended and w_began < r_ended
    sent = SubTask.objects.filter(status="sent").count()
    record(
        ScenarioResult(
            f"recovery vs. completion ({total} races)",
            total,
            sent,
            total - sent - recovery_first,
            0,
            recovery_first,
            "-",
            f"{overlapped} rounds overlapped; recorder first {recorder_first}, recovery first {recovery_first}; "
            "0 written twice, 0 sent reverted",
        )
    )
    assert sent == recorder_first
    assert statuses() == ({"sent": sent, "pending": recovery_first} if recovery_first else {"sent": sent})
    assert overlapped > 0, "the two sides never ran at the same time: no race was tried"


@pytest.fixture
def own_postgres(transactional_db: None) -> Iterator[ThrowawayCluster]:
    """A PostgreSQL cluster of this test's own, which it may stop and start (never the machine's shared one)."""
    shared_since = postmaster_started()
    with throwaway_cluster() as cluster:
        yield cluster
    assert postmaster_started() == shared_since, "the shared PostgreSQL server was restarted"


def first_times(conditions: dict[str, Callable[[], bool]], *, timeout: float, what: str) -> dict[str, float]:
    """Wait until every condition has held once; the seconds each took to hold first."""
    started, seen = time.monotonic(), {}

    def all_seen() -> bool:
        for name, condition in conditions.items():
            if name not in seen and condition():
                seen[name] = time.monotonic() - started
        return len(seen) == len(conditions)

    wait_for(all_seen, timeout=timeout, what=what)
    return seen


def scheduler_logs_say(schedulers: Schedulers, text: str) -> bool:
    return any(text in Path(p.log_path).read_text() for p in schedulers.procs)


def test_a_postgresql_restart_while_sends_are_on_the_wire(
    own_postgres, smtp_sink, email_service_factory, user_factory, schedulers
):
    configure_for_faults()
    total = size(3_000, 30_000)
    # A 10 s SMTP timeout: the slow replies below are late, not failures.
    services = make_services(email_service_factory, smtp_sink.port, 5, timeout=10.0)
    queue_mail(user_factory, total, users=20)
    smtp_sink.latency = 0.005
    concurrency = 2
    schedulers.start(3, *SELF_CONTAINED, "--concurrency", str(concurrency), "--until-empty")
    wait_for(lambda: smtp_sink.count() >= total // 5, timeout=120, what="a fifth sent")

    # Replies now take 3 s: every service's slot is claimed (one each: their rate leases them) and the
    # senders wait on the server's reply.
    smtp_sink.latency = 3.0

    def on_the_wire() -> list:
        now = time.time()
        return [r for r in smtp_sink.snapshot() if r.replied_at > now + 0.5]

    at_stop: dict[str, set[str]] = {}

    def mid_send() -> bool:
        # In this order: a send on the wire stays processing until its reply (>= 0.5 s away) is recorded.
        at_stop["wire"] = {r.message_id for r in on_the_wire()}
        at_stop["processing"] = set(SubTask.objects.filter(status="processing").values_list("message_id", flat=True))
        return len(at_stop["processing"]) >= len(services) and len(at_stop["wire"]) >= concurrency

    wait_for(mid_send, timeout=60, what=f"{len(services)} subtasks processing, {concurrency} of them on the wire")
    wire, processing = at_stop["wire"], at_stop["processing"]
    replies_at = max(r.replied_at for r in smtp_sink.snapshot() if r.message_id in wire)
    close_default_connection()
    own_postgres.stop()  # fast: every session cut, open transactions rolled back
    stopped = time.monotonic()
    smtp_sink.latency = 0.005
    # Down until the server has answered those sends and a scheduler has failed to record an outcome.
    wait_for(lambda: time.time() > replies_at, timeout=10, what="the replies to the sends on the wire")
    wait_for(
        lambda: scheduler_logs_say(schedulers, "cannot record outcomes yet"),
        timeout=30,
        what="a recorder to find the database down",
    )
    at_start = smtp_sink.count()
    own_postgres.start()
    down_for = time.monotonic() - stopped
    took = first_times(
        {
            "sending": lambda: smtp_sink.count() > at_start,
            "recorded": lambda: SubTask.objects.filter(message_id__in=wire, status="sent").count() == len(wire),
        },
        timeout=120,
        what="a new send, and the sends that were on the wire recorded",
    )
    assert schedulers.wait(timeout=size(300, 1800)) == [0, 0, 0], schedulers.logs()

    delivery = check_delivery(smtp_sink)
    attempts = Counter(SendAttempt.objects.filter(subtask__message_id__in=wire).values_list("outcome", flat=True))
    record(
        ScenarioResult(
            "PostgreSQL restart mid-send",
            total,
            delivery.sent,
            delivery.lost,
            delivery.duplicates,
            recovered_count(),
            f"{took['sending']:.1f} s",
            f"{len(wire)} sends on the wire, {len(processing)} claims processing; down {down_for:.1f} s; "
            f"their outcomes recorded {took['recorded']:.1f} s after the start",
        )
    )
    # Stopped mid-send: the claims were processing, and what the server was answering among them.
    assert len(processing) >= len(services) and len(wire) >= concurrency and wire <= processing
    assert statuses() == {"sent": total}
    assert delivery.lost == 0
    assert delivery.duplicates == 0  # no process died: every outcome was kept and recorded once
    assert attempts == {"sent": len(wire)}
    assert recovered_count() == 0  # no live worker was taken for dead
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
    # Exactly the mails the server answered after the client's 1 s timeout went out again (same Message-ID).
    late = {r.message_id for r in smtp_sink.snapshot() if r.replied_at - r.received_at > 1.0}
    assert late and set(delivery.duplicate_ids) == late
    assert overlaps == 0
    check_rate_and_quota(smtp_sink, services)
