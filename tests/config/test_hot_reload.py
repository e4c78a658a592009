"""A change made while run_scheduler runs reaches that process within 2 s, without a restart."""

from __future__ import annotations

import itertools
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from unittest import mock

import pytest

from config.services import ConfigManagerService
from queues.services import task_create
from tests.metrics_auth import METRICS_HEADERS
from tests.schedulers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

REACH_SECONDS = 2.0
CLAIM_COUNT = re.compile(r'^edm_claim_seconds_count\{result="(\w+)"\} (\d+)\.0$', re.MULTILINE)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def claims(port: int) -> dict[str, int]:
    """The scheduler's claims so far by result, from its metrics port (empty until it serves them)."""
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=METRICS_HEADERS)
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return {}
    return {result: int(n) for result, n in CLAIM_COUNT.findall(text) if int(n)}


def queue(owner, n: int) -> None:
    task_create(
        owner=owner,
        name="reload",
        subject="Hi",
        body_text="Hello",
        recipients=[f"r{i}@reload.example" for i in range(n)],
    )


def test_a_new_sending_rate_reaches_a_running_scheduler_within_2_seconds(
    smtp_sink, email_service_factory, user, queue_config, schedulers
):
    # sending_rate empty: the service runs at queue.default_sending_rate.
    email_service_factory(port=smtp_sink.port, sending_rate=None, daily_quota=10_000)
    queue_config(default_sending_rate=0.05, claim_batch_size=1)
    queue(user, 500)
    schedulers.start_one("--concurrency", "1")
    wait_until(lambda: smtp_sink.count() >= 10, timeout=60, what="the scheduler sending fast")

    changed_at = time.time()
    ConfigManagerService.set_config("queue", "default_sending_rate", 1.5)
    time.sleep(REACH_SECONDS + 4)

    arrivals = sorted(r.received_at for r in smtp_sink.snapshot())
    before = sorted(b - a for a, b in itertools.pairwise(arrivals) if b < changed_at)
    assert before[len(before) // 2] < 0.5, "it was sending at the fast rate before the change"
    # The first send made at the new rate: the first arrival followed by a
    # 1.5 s gap. Every send claimed with the new value is spaced out like that.
    after = [a for a in arrivals if a >= changed_at]
    slow_from = next(a for a, b in itertools.pairwise(after) if b - a >= 1.4)
    print(f"new sending rate in effect {slow_from - changed_at:.2f} s after the change")
    assert slow_from - changed_at <= REACH_SECONDS, f"the new rate took {slow_from - changed_at:.2f} s to arrive"
    later = [a for a in after if a >= slow_from]
    assert all(b - a >= 1.4 for a, b in itertools.pairwise(later)), later
    assert "configuration reloaded" in Path(schedulers.procs[0].log_path).read_text()


def test_a_shorter_idle_sleep_wakes_a_sleeping_scheduler_within_2_seconds(
    smtp_sink, email_service_factory, user, queue_config, schedulers
):
    email_service_factory(port=smtp_sink.port, sending_rate=0)
    queue_config(no_work_sleep_seconds=300)
    port = free_port()
    schedulers.start_one("--concurrency", "1", "--metrics-port", str(port))
    # Its first claim finds nothing to send: from then on it sleeps for 300 s.
    wait_until(lambda: "no_work" in claims(port), timeout=30, what="the scheduler's first, empty claim")
    time.sleep(0.5)
    asleep = claims(port)
    # New work whose wake-up notification is lost (PostgreSQL): only the poll can find it.
    with mock.patch("queues.rotation.notify_work"):
        queue(user, 1)
    time.sleep(0.5)
    assert claims(port) == asleep, "still asleep with the old setting: no claim since"

    changed_at = time.time()
    ConfigManagerService.set_config("queue", "no_work_sleep_seconds", 0.1)
    wait_until(lambda: smtp_sink.count() == 1, timeout=30, what="the mail after the change")
    woke_after = smtp_sink.snapshot()[0].received_at - changed_at
    print(f"sleeping scheduler sent {woke_after:.2f} s after the change")
    assert woke_after <= REACH_SECONDS
    assert claims(port)["claimed"] == 1
    assert claims(port)["no_work"] >= asleep["no_work"]
