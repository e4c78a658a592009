"""The chaos soak: everything at once, then every guarantee checked from the relay's side and the database.

Three ``run_scheduler`` processes, one with its clock 300 s ahead and one
300 s behind (libfaketime), the third on time, are killed (-9) at random and
restarted with the same clock; an SMTP relay answers 4xx and 5xx at random
and sometimes holds its reply longer than the services' timeout; services
with different rates and quotas; users with tasks; and meanwhile an operator
pauses, resumes, cancels and deletes tasks and users, tries to delete
services, disables and enables them, and changes rates and settings through
the admin and the API.
After a bounded drain the invariants are checked (see tests/faults/chaos.py)
and a table row is printed (and appended to var/soak-report.txt).

    DATABASE_URL=postgres://... .venv/bin/pytest tests/faults/test_chaos_soak.py          # CI: ~3 min
    CHAOS_SCALE=large DATABASE_URL=postgres://... .venv/bin/pytest tests/faults/test_chaos_soak.py

CHAOS_SEED picks another random sequence (kills, actions, relay answers);
CHAOS_SKEW_SECONDS=0 runs every scheduler on time (to tell clock defects from the rest).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from queues.expansion import tasks_prepare
from queues.models import EmailService, SubTask, Task, WorkerHeartbeat
from queues.services import task_create
from tests.faults import chaos
from tests.faults.chaos import Finding, Gap, Incarnation, Sample, ServiceTimeline, SoakFigures, scaled
from tests.faults.chaos_operator import DONE, ERROR, Operator
from tests.faults.chaos_relay import ChaosRelay
from tests.faults.harness import ScenarioResult, configure_for_faults, record, recovered_count, wait_for

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

LIBFAKETIME = os.environ.get("LIBFAKETIME_PATH", "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
# CHAOS_SKEW_SECONDS=0 runs all three on time: tells clock defects from the rest.
SKEW = int(os.environ.get("CHAOS_SKEW_SECONDS", "300"))
SKEWS = {"ahead": SKEW, "behind": -SKEW, "ontime": 0}
SEED = int(os.environ.get("CHAOS_SEED", "9"))
TIMEOUT = 1.5  # every service's SMTP timeout
STALL = 4.0  # a stalled reply comes this late: well past the timeout
GRACE = 2.0  # a rate or enabled change reaches mail already claimed within this (a sender may be held 1.5 s)

CHAOS_SECONDS = scaled(80, 900)
KILL_EVERY = scaled(8, 10)
MAX_KILLS = int(scaled(9, 80))
ACTION_EVERY = scaled(1.2, 1.0)
MAX_ACTIONS = int(scaled(60, 800))
USERS = int(scaled(8, 20))
INITIAL_MAIL = int(scaled(2000, 20000))
TOP_UP = int(scaled(150, 400))
MAX_TOP_UPS = int(scaled(8, 80))
WIND_DOWN = 0.65  # the share of the chaos with pauses and new mail
DRAIN_SECONDS = scaled(100, 600)
STOP_SECONDS = 30

# (rate, daily quota): spaced services, one with a small quota, and one unspaced
# whose rate the operator raises early on (mail it already claimed must honour it).
SERVICES = [(0.05, 100_000), (0.1, 100_000), (0.2, 100_000), (0.5, 40), (1.0, 100_000), (0.0, 100_000)]
UNSPACED_RAISED_AT = 5.0  # seconds into the chaos
UNSPACED_NEW_RATE = 0.3


def clock_env(skew: int) -> dict[str, str]:
    env = {"TZ": "UTC", "LOG_FORMAT": "text", "LOG_LEVEL": "INFO"}
    if skew:
        env |= {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": f"{skew:+d}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    return env


class Fleet:
    """The three schedulers, one per clock; every incarnation remembered."""

    def __init__(self, schedulers) -> None:
        self.schedulers = schedulers
        self.incarnations: list[Incarnation] = []
        self.current: dict[str, Incarnation] = {}
        self._lock = threading.Lock()

    def start(self, clock: str) -> Incarnation:
        skew = SKEWS[clock]
        worker_id = f"soak-{clock}-{len(self.incarnations)}"
        proc = self.schedulers.start_one(
            "--maintenance", "on", "--concurrency", "3", worker_id=worker_id, env=clock_env(skew)
        )
        inc = Incarnation(worker_id=worker_id, skew=skew, proc=proc, started_at=time.time())
        with self._lock:
            self.incarnations.append(inc)
            self.current[clock] = inc
        return inc

    def processes(self) -> dict[int, str]:
        """pid -> worker id of the running schedulers (the relay tells senders apart with it)."""
        with self._lock:
            return {i.proc.pid: i.worker_id for i in self.incarnations if i.killed_at is None}

    def kill_and_restart(self, rng: random.Random) -> Incarnation:
        # The kill that matters lands mid-send: prefer a scheduler with sends under way.
        running = list(self.current.items())
        busy = [
            (c, i)
            for c, i in running
            if SubTask.objects.filter(status=SubTask.Status.PROCESSING, claimed_by=i.worker_id).exists()
        ]
        clock, victim = rng.choice(busy or running)
        victim.killed_at = time.time()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        self.start(clock)
        return victim

    def stop(self) -> None:
        """SIGTERM to every live scheduler; one that has not exited after STOP_SECONDS is killed."""
        alive = [i for i in self.current.values() if i.proc.poll() is None]
        for inc in alive:
            inc.term_at = time.time()
            inc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for inc in alive:
            try:
                inc.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                inc.exited_on_term = inc.proc.returncode == 0
            except subprocess.TimeoutExpired:
                inc.exited_on_term = False
                inc.proc.kill()
                inc.proc.wait()


class Monitor:
    """What is sampled while the soak runs: quotas in the database, heartbeats."""

    def __init__(self) -> None:
        self.quota = Finding("used_quota never above daily_quota (database, sampled)")
        self.samples: list[Sample] = []
        self.quota_samples = 0

    def tick(self) -> None:
        self.quota_samples += 1
        for name, used, quota in EmailService.objects.values_list("name", "used_quota", "daily_quota"):
            if used > quota:
                self.quota.fail(f"{name}: used_quota {used} > daily_quota {quota} at {chaos._clock(time.time())}")
        if not self.samples or time.time() - self.samples[-1].at >= 1.0:
            beats = dict(WorkerHeartbeat.objects.values_list("worker_id", "last_seen_at"))
            self.samples.append(Sample(at=time.time(), beats=beats))


def unfinished() -> bool:
    return (
        SubTask.objects.exclude(status__in=SubTask.TERMINAL)
        .exclude(status=SubTask.Status.PARKED, error_message__gt="")
        .exists()
    )


def claimable_left() -> int:
    return SubTask.objects.filter(
        status=SubTask.Status.PENDING, task__status__in=[Task.Status.PENDING, Task.Status.SENDING]
    ).count()


@pytest.fixture
def fleet(schedulers):
    return Fleet(schedulers)


@pytest.fixture
def relay(fleet):
    relay = ChaosRelay(
        seed=SEED, tempfail=0.06, permfail=0.02, stall=0.015, stall_seconds=STALL, processes=fleet.processes
    ).start()
    yield relay
    relay.shutdown()


@dataclass
class World:
    services: list[EmailService]
    users: list
    deletable: set  # the users the operator may try to delete
    timeline: ServiceTimeline
    operator: Operator
    rng: random.Random

    @property
    def quotas(self) -> dict[str, int]:
        return {s.from_email: s.daily_quota for s in self.services}


def build_world(relay: ChaosRelay, email_service_factory, user_factory) -> World:
    """Services on the relay, users with two tasks each, and the operator (a superuser)."""
    rng = random.Random(SEED)
    configure_for_faults({("queue", "max_retries"): 30})
    timeline = ServiceTimeline()
    services = []
    for i, (rate, quota) in enumerate(SERVICES):
        service = email_service_factory(
            name=f"soak-{i}",
            host="127.0.0.1",
            port=relay.port,
            from_email=f"soak{i}@edm.example",
            sending_rate=rate,
            daily_quota=quota,
            timeout=TIMEOUT,
        )
        timeline.add(service.from_email, rate)
        services.append(service)
    users = [user_factory(username=f"soak-user-{u}") for u in range(USERS)]
    per_task = INITIAL_MAIL // (2 * USERS)
    for u, owner in enumerate(users):
        for t in range(2):
            task_create(
                owner=owner,
                name=f"soak {u}.{t}",
                subject="Hello {{ contact.first_name }}",
                body_text="Soak {{ contact.first_name }}",
                recipients=[{"email": f"r{t}-{i}@u{u}.example", "first_name": f"R{i}"} for i in range(per_task)],
            )
    tasks_prepare()  # large ones are prepared in the background otherwise: the soak starts from sendable mail
    staff = user_factory(username="soak-operator", is_staff=True, is_superuser=True)
    operator = Operator(staff, timeline, rng)
    return World(services, users, {u.pk for u in users[-2:]}, timeline, operator, rng)


def run_chaos(world: World, fleet: Fleet, monitor: Monitor) -> int:
    """Kills, operator actions and new mail until CHAOS_SECONDS have passed; returns the number of kills."""
    operator, rng = world.operator, world.rng
    started = time.time()
    kills, top_ups, raised, winding_down = 0, 0, False, False
    next_kill, next_action = started + KILL_EVERY, started + 1.0
    while time.time() < started + CHAOS_SECONDS:
        monitor.tick()
        now = time.time()
        if not winding_down and now >= started + WIND_DOWN * CHAOS_SECONDS:
            # The last part of the chaos: no new pauses nor mail, what was paused goes on,
            # so that the queue drains while kills and the other actions go on.
            winding_down = True
            operator.resume_all()
        if not raised and now >= started + UNSPACED_RAISED_AT:
            raised = True
            operator.set_rate(world.services[-1], UNSPACED_NEW_RATE, "api")
        if now >= next_kill and kills < MAX_KILLS:
            fleet.kill_and_restart(rng)
            kills += 1
            next_kill = now + KILL_EVERY * rng.uniform(0.6, 1.4)
        if now >= next_action and len(operator.actions) < MAX_ACTIONS:
            operator.act(users=world.users, deletable_users=world.deletable, max_disabled=2, pauses=not winding_down)
            next_action = now + ACTION_EVERY * rng.uniform(0.5, 1.5)
        if not winding_down and top_ups < MAX_TOP_UPS and claimable_left() < TOP_UP:
            owners = [u for u in world.users if type(u).objects.filter(pk=u.pk).exists()]
            operator.create_task(rng.choice(owners), TOP_UP)
            top_ups += 1
        threading.Event().wait(0.1)  # the pace of the operator's loop, not a synchronisation
    return kills


def drain(world: World, monitor: Monitor) -> tuple[bool, float]:
    """The operator puts things back; then wait (bounded) for every subtask to finish."""
    world.operator.resume_all()
    for service in EmailService.objects.filter(is_enabled=False):
        world.operator.set_enabled(service, True, "api")
    began = time.time()
    while unfinished():
        if time.time() > began + DRAIN_SECONDS:
            return False, time.time() - began
        monitor.tick()
        threading.Event().wait(0.2)  # the pace of the sampling
    return True, time.time() - began


def check_everything(
    world: World, fleet: Fleet, monitor: Monitor, arrivals: list, drained: bool
) -> tuple[list[Finding], Counter, int, Gap | None, int]:
    """Every invariant; also the figures the checks computed (statuses, extra copies, tightest gap, recoveries)."""
    terminal, statuses = chaos.check_terminal()
    if not drained:
        terminal.note += f"; not drained {DRAIN_SECONDS:g} s after the chaos"
    duplicates, extra_copies = chaos.check_duplicates(arrivals, fleet.incarnations, TIMEOUT)
    rate, tightest = chaos.check_rate(arrivals, world.timeline, GRACE)
    declared_dead, recoveries = chaos.check_declared_dead(fleet.incarnations)
    claiming = chaos.check_claiming_at_relay(
        arrivals, monitor.samples, fleet.incarnations, window=scaled(15, 30), warmup=5.0, min_others=30
    )
    errors = Finding("no operator action answered 5xx")
    for action in world.operator.actions:
        if action.outcome == ERROR:
            errors.fail(action.line())
    stopping = Finding("every live scheduler exits 0 on SIGTERM")
    for inc in fleet.incarnations:
        if inc.exited_on_term is False:
            stopping.fail(f"{inc.worker_id} (clock {inc.skew:+d} s) exit code {inc.proc.returncode} after SIGTERM")
    findings = [
        terminal,
        chaos.check_delivery(arrivals, world.operator.deleted_mail),
        duplicates,
        rate,
        chaos.check_disabled(arrivals, world.timeline, GRACE),
        monitor.quota,
        chaos.check_quota_at_relay(arrivals, world.quotas),
        claiming,
        declared_dead,
        errors,
        stopping,
    ]
    return findings, statuses, extra_copies, tightest, recoveries


def details(world: World, arrivals: list, drain_took: float, recoveries: int) -> list[str]:
    """The lines under the table row: the relay's and the operator's side of the run."""
    actions = world.operator.actions
    kinds = Counter(f"{a.kind}/{a.outcome}" for a in actions)
    per_service = sorted(Counter(a.mail_from for a in arrivals).items())
    return [
        f"relay: {len(arrivals)} transactions, {sum(a.accepted for a in arrivals)} taken, "
        f"{sum(a.stalled for a in arrivals)} stalled, {sum(not a.worker for a in arrivals)} from an unknown sender",
        f"operator: {sum(a.outcome == DONE for a in actions)} done; "
        + ", ".join(sorted(f"{k} {n}" for k, n in kinds.items())),
        f"deleted subtasks: {len(world.operator.deleted_mail)}; drain {drain_took:.1f} s; recoveries {recoveries}",
        "sends per service at the relay / daily_quota: "
        + ", ".join(f"{email.split('@')[0]} {n}/{world.quotas[email]}" for email, n in per_service),
        f"refusals that do not say why (a bare 4xx): {sum(a.bare_refusal for a in actions)}",
        *[f"  {a.line()}" for a in actions if a.kind.startswith("delete") or a.outcome == ERROR][:16],
    ]


def test_chaos_soak(relay, fleet, email_service_factory, user_factory):
    began = time.time()
    world = build_world(relay, email_service_factory, user_factory)
    monitor = Monitor()
    for clock in SKEWS:
        fleet.start(clock)
    wait_for(
        lambda: WorkerHeartbeat.objects.filter(worker_id__in=[i.worker_id for i in fleet.incarnations]).count() == 3,
        timeout=60,
        what="three schedulers up",
    )
    kills = run_chaos(world, fleet, monitor)
    drained, drain_took = drain(world, monitor)
    fleet.stop()
    arrivals = relay.snapshot()

    findings, statuses, extra_copies, tightest, recoveries = check_everything(world, fleet, monitor, arrivals, drained)
    actions = world.operator.actions
    figures = SoakFigures(
        subtasks=sum(statuses.values()) + len(world.operator.deleted_mail),
        sent=statuses.get("sent", 0),
        failed=statuses.get("failed", 0),
        cancelled=statuses.get("cancelled", 0),
        parked=statuses.get("parked", 0),
        unfinished=findings[0].failures,
        duplicates=extra_copies,
        kills=kills,
        actions=len(actions),
        refused=sum(a.outcome != DONE for a in actions),
        tightest=tightest,
        duration=time.time() - began,
    )
    text = chaos.report(figures, findings, details(world, arrivals, drain_took, recoveries))
    print(text)
    record(
        ScenarioResult(
            "chaos soak",
            figures.subtasks,
            figures.sent,
            figures.unfinished,
            extra_copies,
            recovered_count(),
            f"drain {drain_took:.0f} s",
            f"{kills} kills, {len(actions)} actions, min gap/rate {figures.gap}",
        )
    )
    assert not [f for f in findings if f.failures], text
