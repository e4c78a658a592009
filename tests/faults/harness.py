"""What the fault-injection scenarios share: the set-up, the checks, and the report table.

Scale: FAULT_SCALE=small (the default, CI) or FAULT_SCALE=large (by hand).
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from config.services import ConfigManagerService
from queues.expansion import tasks_prepare
from queues.models import EmailService, MaintenanceRun, SubTask
from queues.services import task_create

SCALE = os.environ.get("FAULT_SCALE", "small")
# The schedulers run the recovery sweeps themselves, whether or not a Celery
# broker is configured (with one, production leaves them to Celery beat and a
# worker, which these scenarios do not start).
SELF_CONTAINED = ("--maintenance", "on")
REPORT: list[ScenarioResult] = []
REPORT_FILE = Path(__file__).resolve().parent.parent.parent / "var" / "fault-report.txt"


def size(small: int, large: int) -> int:
    return large if SCALE == "large" else small


@dataclass
class ScenarioResult:
    scenario: str
    subtasks: int
    sent: int
    lost: int
    duplicates: int
    recovered: int
    time_to_recover: str
    note: str = ""


def record(result: ScenarioResult) -> ScenarioResult:
    REPORT.append(result)
    REPORT_FILE.parent.mkdir(exist_ok=True)
    with REPORT_FILE.open("a") as report:
        report.write(format_row(result) + "\n")
    return result


HEADER = f"{'scenario':<34} {'subtasks':>8} {'sent':>7} {'lost':>5} {'dup':>5} {'recovered':>9} {'time to recover':>16}"


def format_row(r: ScenarioResult) -> str:
    row = (
        f"{r.scenario:<34} {r.subtasks:>8} {r.sent:>7} {r.lost:>5} {r.duplicates:>5} {r.recovered:>9} "
        f"{r.time_to_recover:>16}"
    )
    return f"{row}  {r.note}" if r.note else row


def configure_for_faults(overrides: dict[tuple[str, str], object] | None = None) -> None:
    """Short horizons so that recovery shows within seconds (production defaults are minutes)."""
    values = {
        ("recovery", "worker_dead_seconds"): 6,
        ("recovery", "sweep_seconds"): 1,
        ("queue", "retry_backoff_seconds"): 0.5,
        ("queue", "retry_backoff_max_seconds"): 4,
        ("queue", "max_retries"): 30,
        ("queue", "send_lease_seconds"): 20,
        ("queue", "service_failure_threshold"): 5,
        ("queue", "service_backoff_seconds"): 1,
        ("queue", "service_backoff_max_seconds"): 4,
        ("queue", "no_service_sleep_seconds"): 0.2,
        ("queue", "no_work_sleep_seconds"): 0.2,
        ("queue", "claim_batch_size"): 10,
    }
    values.update(overrides or {})
    for (category, key), value in values.items():
        ConfigManagerService.set_config(category, key, value)


def make_services(factory, port: int, count: int, **fields) -> list[EmailService]:
    defaults = {"sending_rate": 0.01, "daily_quota": 1_000_000, "timeout": 2.0}
    return [
        factory(
            name=f"fault-{i}", host="127.0.0.1", port=port, from_email=f"fault{i}@edm.example", **{**defaults, **fields}
        )
        for i in range(count)
    ]


def queue_mail(user_factory, total: int, users: int) -> list:
    tasks = []
    for u in range(users):
        owner = user_factory(username=f"fault-user-{u}")
        n = total // users + (1 if u < total % users else 0)
        tasks.append(
            task_create(
                owner=owner,
                name=f"fault task {u}",
                subject="Hello {{ contact.first_name }}",
                body_text="Fault drill {{ contact.first_name }}",
                recipients=[{"email": f"r{i}@u{u}.example", "first_name": f"R{i}"} for i in range(n)],
            )
        )
    tasks_prepare()  # large ones are prepared in the background otherwise: the drills start from sendable mail
    return tasks


def statuses() -> Counter:
    return Counter(SubTask.objects.values_list("status", flat=True))


def all_terminal() -> bool:
    return not SubTask.objects.exclude(status__in=SubTask.TERMINAL).exists()


def recovered_count() -> int:
    """Claims given back by recovery, over every sweep run so far."""
    total = 0
    for totals in MaintenanceRun.objects.filter(name__in=["recover_dead_workers", "recover_stuck"]).values_list(
        "totals", flat=True
    ):
        total += sum(v for k, v in totals.items() if not k.startswith("stuck_task") and not k.endswith("already_done"))
    return total


@dataclass
class Delivery:
    sent: int
    lost: int
    duplicates: int
    duplicate_ids: dict[str, int]


def check_delivery(sink) -> Delivery:
    """Every subtask terminal and at the sink at least once; duplicates only as same-Message-ID copies."""
    records = sink.snapshot()
    received = Counter(r.message_id for r in records)
    expected = dict(SubTask.objects.values_list("message_id", "recipient_email"))
    sent_ids = set(SubTask.objects.filter(status="sent").values_list("message_id", flat=True))
    not_terminal = SubTask.objects.exclude(status__in=SubTask.TERMINAL).count()
    lost = not_terminal + len(sent_ids - set(received))
    for record in records:
        assert record.message_id in expected, f"unknown Message-ID at the sink: {record.message_id}"
        assert record.recipient == expected[record.message_id], "a copy went to someone else"
    duplicates = {mid: n for mid, n in received.items() if n > 1}
    return Delivery(
        sent=len(sent_ids),
        lost=lost,
        duplicates=sum(n - 1 for n in duplicates.values()),
        duplicate_ids=duplicates,
    )


# MAIL FROM stamps are the kernel's arrival times at the sink (queues.arrival_stamps).
RATE_TOLERANCE = 0.002


def check_rate_and_quota(sink, services: list[EmailService]) -> None:
    """Invariants 1 and 2 at the sink: no two mails of a service start (MAIL FROM) closer than its rate
    (RATE_TOLERANCE for the sink's own timestamps); quota kept."""
    by_sender = defaultdict(list)
    for record in sink.snapshot():
        by_sender[record.mail_from].append(record.started_at)
    for service in services:
        times = sorted(by_sender.get(service.from_email, []))
        assert len(times) <= service.daily_quota, (service.name, len(times), service.daily_quota)
        if service.sending_rate and len(times) > 1:
            gap = min(b - a for a, b in itertools.pairwise(times))
            assert gap >= service.sending_rate - RATE_TOLERANCE, (service.name, gap, service.sending_rate)


def wait_for(condition, *, timeout: float, interval: float = 0.1, what: str = "") -> float:
    """Wait until condition() holds; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class TarPit:
    """A TCP server that accepts connections and never says a word (an SMTP server that never greets)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()
