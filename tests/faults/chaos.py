"""The chaos soak's bookkeeping and its invariants, each checked after the run from recorded facts.

Times are the test process's ``time.time()``: the relay runs in the test
process, so its arrival times share that clock with the kills, the operator's
changes and the samples. Log lines of a scheduler under a skewed clock are
moved back by its known skew.

Scale: CHAOS_SCALE=small (the default, CI: about 3 minutes) or CHAOS_SCALE=large.
"""

from __future__ import annotations

import calendar
import datetime as dt
import itertools
import math
import os
import re
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from django.db.models import Count, Max

from common.dbclock import db_now
from queues.models import EmailService, MaintenanceRun, SubTask, Task, UserQueue
from tests.faults.chaos_relay import Arrival

SCALE = os.environ.get("CHAOS_SCALE", "small")
REPORT_FILE = Path(__file__).resolve().parent.parent.parent / "var" / "soak-report.txt"
RECORD_SLACK_SECONDS = 5.0  # a kill this soon after a reply can still find the outcome unrecorded
ROLLBACK_SLACK_SECONDS = 1.0  # a sweep killed this soon after logging may have rolled back


def scaled(small: float, large: float) -> float:
    return large if SCALE == "large" else small


@dataclass
class Incarnation:
    """One scheduler process: a worker id, its clock skew and its life as the test saw it."""

    worker_id: str
    skew: int  # seconds its clock is ahead of the real one
    proc: subprocess.Popen
    started_at: float
    killed_at: float | None = None  # kill -9
    term_at: float | None = None  # SIGTERM at the end of the run
    exited_on_term: bool | None = None

    @property
    def ended_at(self) -> float:
        return min(t for t in (self.killed_at, self.term_at, math.inf) if t is not None)

    def alive_at(self, t: float) -> bool:
        return self.started_at <= t < self.ended_at


@dataclass
class Finding:
    invariant: str
    failures: int = 0
    evidence: list[str] = field(default_factory=list)
    note: str = ""

    def fail(self, line: str) -> None:
        self.failures += 1
        if len(self.evidence) < 24:
            self.evidence.append(line)

    def lines(self) -> list[str]:
        head = f"{'FAIL' if self.failures else 'ok  '} {self.invariant}: {self.failures} failure(s)"
        head += f" ({self.note})" if self.note else ""
        return [head, *(f"       {e}" for e in self.evidence)]


class ServiceTimeline:
    """Which sending_rate and enabled state were in force when, per service (by its from_email).

    A change is known to have taken effect somewhere between the request and
    its answer: the old value counts until the answer, the new one from the
    request, so the check never blames a send on a change it may have preceded.
    """

    def __init__(self) -> None:
        self.rates: dict[str, list[list[float]]] = {}
        self.disabled: dict[str, list[list[float]]] = defaultdict(list)

    def add(self, email: str, rate: float) -> None:
        self.rates[email] = [[-math.inf, math.inf, rate]]

    def rate_changed(self, email: str, rate: float, before: float, after: float) -> None:
        self.rates[email][-1][1] = after
        self.rates[email].append([before, math.inf, rate])

    def enabled_changed(self, email: str, enabled: bool, before: float, after: float) -> None:
        periods = self.disabled[email]
        if enabled and periods and periods[-1][1] == math.inf:
            periods[-1][1] = before
        elif not enabled and not (periods and periods[-1][1] == math.inf):
            periods.append([after, math.inf])

    def required_gap(self, email: str, since: float, until: float) -> float:
        """The smallest rate in force at any moment in [since, until]."""
        return min(r for f, t, r in self.rates[email] if f <= until and t >= since)

    def disabled_since(self, email: str, t: float, grace: float) -> float | None:
        for start, end in self.disabled.get(email, []):
            if start + grace <= t <= end:
                return start
        return None


# --- the invariants ------------------------------------------------------------------------------


def check_terminal() -> tuple[Finding, Counter]:
    """Every subtask sent, failed or cancelled, or parked with the reason on it."""
    finding = Finding("every subtask terminal or parked with a reason")
    statuses = Counter(SubTask.objects.values_list("status", flat=True))
    rest = SubTask.objects.exclude(status__in=SubTask.TERMINAL).exclude(
        status=SubTask.Status.PARKED, error_message__gt=""
    )
    left = rest.count()
    if not left:
        return finding, statuses
    finding.note = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()) if s not in SubTask.TERMINAL)
    for line in why_unfinished(rest):
        finding.fail(line)
    for sub in rest.values("id", "status", "claimed_by", "task__status", "error_message")[:6]:
        finding.fail(
            f"{sub['id']} {sub['status']} (task {sub['task__status']}, claimed by {sub['claimed_by'] or '-'}, "
            f"error {sub['error_message'][:60]!r})"
        )
    finding.failures = left
    return finding, statuses


def why_unfinished(rest) -> list[str]:
    """What holds the unfinished subtasks back, by the database's clock: the task, the retry time, the rotation."""
    now = db_now()
    lines = [f"{s}: {n}" for s, n in Counter(rest.values_list("status", "task__status")).most_common()]
    lines = [f"by (subtask, task) status: {', '.join(lines)}"]
    due = rest.filter(status=SubTask.Status.PENDING, task__status__in=[Task.Status.PENDING, Task.Status.SENDING])
    later = due.filter(next_attempt_at__gt=now).aggregate(n=Count("id"), last=Max("next_attempt_at"))
    if later["n"]:
        lines.append(
            f"{later['n']} pending with a retry time up to {(later['last'] - now).total_seconds():.0f} s ahead"
        )
    owners = set(due.filter(next_attempt_at__lte=now).values_list("owner_id", flat=True))
    queues = list(UserQueue.objects.filter(user_id__in=owners).select_related("user"))
    if len(queues) < len(owners):
        lines.append(f"due work of {len(owners) - len(queues)} users without a rotation row")
    for queue in queues:
        turn_ahead = queue.turn / 1e6 - now.timestamp()
        ready = (
            "out of the rotation"
            if queue.ready_at is None
            else f"ready_at {(queue.ready_at - now).total_seconds():+.0f} s"
        )
        lines.append(f"due work of {queue.user.username}: {ready}, turn {turn_ahead:+.0f} s from the database's clock")
    for svc in EmailService.objects.order_by("name"):
        lines.append(f"service {svc.name}: {_service_state(svc, now)}")
    return lines


def _service_state(svc: EmailService, now: dt.datetime) -> str:
    def ahead(moment: dt.datetime | None) -> str:
        return "-" if moment is None else f"{(moment - now).total_seconds():+.0f} s"

    return (
        f"{'enabled' if svc.is_enabled else 'disabled'}, rate {svc.sending_rate} s, "
        f"next_available_at {ahead(svc.next_available_at)}, backoff_until {ahead(svc.backoff_until)}, "
        f"quota {svc.used_quota}/{svc.daily_quota}"
    )


def check_delivery(arrivals: list[Arrival], deleted: dict[str, str]) -> Finding:
    """Every sent subtask reached the relay; every mail the relay took belongs to a subtask and its recipient."""
    finding = Finding("every sent mail at the relay, each copy to its own recipient")
    expected = dict(SubTask.objects.values_list("message_id", "recipient_email"))
    taken = {a.message_id for a in arrivals if a.accepted}
    for mid in SubTask.objects.filter(status=SubTask.Status.SENT).values_list("message_id", flat=True):
        if mid not in taken:
            finding.fail(f"{mid} is sent in the database and never reached the relay")
    for a in arrivals:
        if not a.message_id:
            continue
        recipient = expected.get(a.message_id, deleted.get(a.message_id))
        if recipient is None:
            finding.fail(f"unknown Message-ID at the relay: {a.message_id}")
        elif recipient != a.recipient:
            finding.fail(f"{a.message_id} went to {a.recipient}, its subtask is for {recipient}")
    return finding


def check_duplicates(arrivals: list[Arrival], incarnations: list[Incarnation], timeout: float) -> tuple[Finding, int]:
    """A Message-ID taken twice only when the earlier copy's outcome was unknown: its reply came
    later than the sender waits (a stall), or its sender was killed before recording it."""
    finding = Finding("no mail delivered twice except an unknown outcome (stall, kill) with the same Message-ID")
    copies: dict[str, list[Arrival]] = defaultdict(list)
    for a in sorted(arrivals, key=lambda a: a.started_at):
        if a.accepted and a.message_id:
            copies[a.message_id].append(a)
    extra = 0
    for mid, taken in copies.items():
        for earlier in taken[:-1]:
            extra += 1
            if earlier.stalled or earlier.replied_at - earlier.started_at >= timeout:
                continue
            if _killed_in_flight(earlier, incarnations):
                continue
            later = ", ".join(f"{c.worker or '?'} at +{c.started_at - earlier.started_at:.1f} s" for c in taken[1:])
            first = earlier.worker or "?"
            finding.fail(f"{mid}: taken from {first} (replied in time, sender not killed), again {later}")
    finding.note = f"{extra} extra copies in all"
    return finding, extra


def _killed_in_flight(copy: Arrival, incarnations: list[Incarnation]) -> bool:
    senders = [i for i in incarnations if i.worker_id == copy.worker] if copy.worker else incarnations
    return any(
        i.killed_at is not None and copy.started_at <= i.killed_at <= copy.replied_at + RECORD_SLACK_SECONDS
        for i in senders
    )


@dataclass
class Gap:
    service: str
    gap: float
    required: float


# The relay's MAIL FROM stamps. The 10 ms were set when the relay's thread
# stamped as it read (late by up to ~10 ms under the soak's load); the stamps
# are now the kernel's arrival times (queues.arrival_stamps), as at the
# dedicated rate tests, which allow 2 ms
# (tests/queues/test_rate_and_connections_at_the_relay.py).
RATE_TOLERANCE = 0.01


def check_rate(arrivals: list[Arrival], timeline: ServiceTimeline, grace: float) -> tuple[Finding, Gap | None]:
    """No two sends of a service start closer than the smallest rate in force around them.

    ``grace``: a change reaches sends already claimed within this long.
    Every transaction counts as a send, whatever the relay answered.
    """
    finding = Finding(f"no two sends of a service closer than its sending_rate (rate in force, {grace:g} s grace)")
    by_sender: dict[str, list[float]] = defaultdict(list)
    for a in arrivals:
        by_sender[a.mail_from].append(a.started_at)
    tightest: Gap | None = None
    for email, starts in by_sender.items():
        if email not in timeline.rates:
            finding.fail(f"a send from an unknown sender {email}")
            continue
        for a, b in itertools.pairwise(sorted(starts)):
            required = timeline.required_gap(email, a - grace, b)
            if required <= 0:
                continue
            if tightest is None or (b - a) / required < tightest.gap / tightest.required:
                tightest = Gap(email, b - a, required)
            if b - a < required - RATE_TOLERANCE:
                finding.fail(f"{email}: two sends {b - a:.3f} s apart at {_clock(a)}, rate in force {required:g} s")
    return finding, tightest


def check_disabled(arrivals: list[Arrival], timeline: ServiceTimeline, grace: float) -> Finding:
    finding = Finding(f"no send through a disabled service ({grace:g} s after the change)")
    for a in arrivals:
        since = timeline.disabled_since(a.mail_from, a.started_at, grace)
        if since is not None:
            finding.fail(f"{a.mail_from}: a send at {_clock(a.started_at)}, disabled since {_clock(since)}")
    return finding


def check_quota_at_relay(arrivals: list[Arrival], quotas: dict[str, int]) -> Finding:
    """Sends per service per quota day (UTC) at the relay never above daily_quota."""
    finding = Finding("sends per service per quota day at the relay <= daily_quota")
    per_day = Counter((a.mail_from, dt.datetime.fromtimestamp(a.started_at, dt.timezone.utc).date()) for a in arrivals)
    for (email, day), n in sorted(per_day.items()):
        if n > quotas.get(email, 0):
            finding.fail(f"{email} on {day}: {n} sends, daily_quota {quotas.get(email)}")
    return finding


@dataclass(frozen=True)
class Sample:
    at: float
    beats: dict[str, dt.datetime]  # each worker's heartbeat last_seen_at (in its own clock)


def check_claiming_at_relay(
    arrivals: list[Arrival],
    samples: list[Sample],
    incarnations: list[Incarnation],
    *,
    window: float,
    warmup: float,
    min_others: int,
) -> Finding:
    """Every live scheduler kept claiming while the others found work to send.

    Seen at the relay: in each window, a scheduler alive throughout (and
    started ``warmup`` before it) must start at least one send whenever the
    others started ``min_others`` or more. The heartbeat samples tell whether
    a silent scheduler kept beating (alive to recovery, useless to the queue).
    """
    finding = Finding(f"no live scheduler stopped claiming (windows of {window:g} s, others >= {min_others} sends)")
    if not arrivals:
        return finding
    starts = sorted((a.started_at, a.worker) for a in arrivals)
    evaluated = 0
    w0 = starts[0][0]
    while w0 + window <= starts[-1][0]:
        w1 = w0 + window
        senders = Counter(worker for t, worker in starts if w0 <= t < w1)
        total = sum(senders.values())
        for inc in incarnations:
            if not (inc.started_at <= w0 - warmup and inc.ended_at > w1):
                continue
            own = senders.get(inc.worker_id, 0)
            if total - own < min_others:
                continue
            evaluated += 1
            if own == 0:
                finding.fail(
                    f"{inc.worker_id} (clock {inc.skew:+d} s): no send from {_clock(w0)} to {_clock(w1)} "
                    f"while the others started {total - own}; heartbeat {_beating(samples, inc.worker_id, w0, w1)}"
                )
        w0 = w1
    finding.note = f"{evaluated} scheduler-windows checked"
    return finding


def _beating(samples: list[Sample], worker_id: str, w0: float, w1: float) -> str:
    inside = [s.beats.get(worker_id) for s in samples if w0 <= s.at <= w1]
    if len(inside) < 2:
        return "not sampled"
    return "kept beating" if inside[0] != inside[-1] else "stopped"


@dataclass(frozen=True)
class Recovery:
    at: float  # real time
    writer: str
    rule: str
    action: str
    worker: str
    subtask: str


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+ queues\.recovery subtask recovered (.*)$")


def recoveries_in_logs(incarnations: list[Incarnation]) -> list[Recovery]:
    """Every 'subtask recovered' line of every scheduler's log (written in UTC, moved back by the writer's skew)."""
    found = []
    for inc in incarnations:
        for line in Path(inc.proc.log_path).read_text(errors="replace").splitlines():
            match = _LOG_LINE.match(line)
            if not match:
                continue
            at = calendar.timegm(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")) + int(match.group(2)) / 1000
            fields = dict(kv.split("=", 1) for kv in match.group(3).split() if "=" in kv)
            found.append(
                Recovery(
                    at=at - inc.skew,
                    writer=inc.worker_id,
                    rule=fields.get("rule", ""),
                    action=fields.get("action", ""),
                    worker=fields.get("worker", ""),
                    subtask=fields.get("subtask", ""),
                )
            )
    return found


def check_declared_dead(incarnations: list[Incarnation]) -> tuple[Finding, int]:
    """No claim taken back (dead_worker or timeout rule) from a scheduler that was alive at that moment."""
    finding = Finding("no live scheduler declared dead (recovery took none of its claims)")
    by_id = {i.worker_id: i for i in incarnations}
    found = recoveries_in_logs(incarnations)
    counted = 0
    for r in found:
        counted += 1
        writer = by_id[r.writer]
        if writer.killed_at is not None and r.at <= writer.killed_at <= r.at + ROLLBACK_SLACK_SECONDS:
            continue  # the sweep may have died with its writer, its transaction rolled back
        victim = by_id.get(r.worker)
        if victim is not None and victim.alive_at(r.at):
            finding.fail(
                f"{r.rule}: {r.writer} took back {r.subtask} ({r.action}) from {r.worker} "
                f"(clock {victim.skew:+d} s) at {_clock(r.at)}, alive since {_clock(victim.started_at)}"
                f"{'' if victim.killed_at is None else f', killed at {_clock(victim.killed_at)}'}"
            )
    in_db = _recovered_in_maintenance_runs()
    finding.note = f"{counted} recoveries in the logs, {in_db} in maintenance_runs"
    if in_db > counted:
        # The check reads the logs: recoveries it cannot see there would go unchecked.
        finding.fail(f"maintenance_runs counts {in_db} claims taken back, the logs show {counted}")
    return finding, counted


def _recovered_in_maintenance_runs() -> int:
    total = 0
    for totals in MaintenanceRun.objects.filter(name__in=["recover_dead_workers", "recover_stuck"]).values_list(
        "totals", flat=True
    ):
        total += sum(
            v
            for k, v in totals.items()
            if k.split(".")[0] in ("dead_worker", "timeout") and not k.endswith("already_done")
        )
    return total


def _clock(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


# --- the report ----------------------------------------------------------------------------------


@dataclass
class SoakFigures:
    subtasks: int
    sent: int
    failed: int
    cancelled: int
    parked: int
    unfinished: int
    duplicates: int
    kills: int
    actions: int
    refused: int
    tightest: Gap | None
    duration: float

    @property
    def gap(self) -> str:
        if self.tightest is None:
            return "-"
        return f"{self.tightest.gap:.3f}/{self.tightest.required:g} s"


HEADER = (
    f"{'scale':<6} {'subtasks':>8} {'sent':>6} {'failed':>6} {'cancel':>6} {'parked':>6} {'unfin':>5} "
    f"{'dup':>4} {'kills':>5} {'actions':>7} {'refused':>7} {'min gap/rate':>14} {'duration':>8}"
)


def format_row(f: SoakFigures) -> str:
    return (
        f"{SCALE:<6} {f.subtasks:>8} {f.sent:>6} {f.failed:>6} {f.cancelled:>6} {f.parked:>6} {f.unfinished:>5} "
        f"{f.duplicates:>4} {f.kills:>5} {f.actions:>7} {f.refused:>7} {f.gap:>14} {f.duration:>7.0f}s"
    )


def report(figures: SoakFigures, findings: list[Finding], extra: list[str]) -> str:
    lines = ["chaos soak", HEADER, format_row(figures), *extra]
    for finding in findings:
        lines += finding.lines()
    text = "\n".join(lines)
    REPORT_FILE.parent.mkdir(exist_ok=True)
    with REPORT_FILE.open("a") as out:
        out.write(f"--- {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}\n{text}\n")
    return text
