"""kill -9 of a busy scheduler at default settings: the queue is whole again within a minute.

"Whole" means every subtask is in a terminal state (here: sent). PostgreSQL,
a real SMTP server (aiosmtpd) whose replies take a second, so that the victim
dies holding claims mid-send, and real scheduler processes that run the
recovery sweeps themselves. Nothing is configured: every recovery and queue
setting is at its default, as in production.
"""

from __future__ import annotations

import signal
import time

import pytest

from queues.models import SubTask
from tests.faults.harness import (
    SELF_CONTAINED,
    ScenarioResult,
    all_terminal,
    check_delivery,
    check_rate_and_quota,
    queue_mail,
    record,
    recovered_count,
    statuses,
    wait_for,
)

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

WHOLE_WITHIN_SECONDS = 60
TOTAL = 160
SERVICES = 40


def held_by(worker_id: str, *statuses: str) -> int:
    return SubTask.objects.filter(status__in=statuses or SubTask.CLAIMED, claimed_by=worker_id).count()


def test_kill_9_of_a_busy_scheduler_at_defaults_is_whole_within_a_minute(
    smtp_sink, email_service_factory, user_factory, schedulers
):
    # Every service at its defaults (the queue's 1 s sending rate, a 10 s timeout), all on one server.
    services = [
        email_service_factory(
            name=f"whole-{i}",
            port=smtp_sink.port,
            from_email=f"whole{i}@edm.example",
            sending_rate=None,
            daily_quota=10_000,
        )
        for i in range(SERVICES)
    ]
    queue_mail(user_factory, TOTAL, users=4)
    smtp_sink.latency = 1.0  # each send is under way for a second
    victim = schedulers.start_one(*SELF_CONTAINED, "--concurrency", "20", worker_id="victim")
    wait_for(
        lambda: held_by("victim") >= 20 and held_by("victim", "processing") >= 10,
        timeout=60,
        what="the victim holding claims, many mid-send",
    )
    schedulers.start_one(*SELF_CONTAINED, "--concurrency", "8", worker_id="survivor")

    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()
    held, mid_send = held_by("victim"), held_by("victim", "processing")

    took = wait_for(all_terminal, timeout=WHOLE_WITHIN_SECONDS, what="every subtask terminal after the kill")
    print(f"\ntime to whole after kill -9 at defaults: {took:.1f} s ({held} claims held, {mid_send} processing)")
    whole_after = time.monotonic() - killed_at

    delivery = check_delivery(smtp_sink)
    record(
        ScenarioResult(
            "kill -9 at defaults: time to whole",
            TOTAL,
            delivery.sent,
            delivery.lost,
            delivery.duplicates,
            recovered_count(),
            f"{whole_after:.1f} s",
            f"{held} claims held at the kill, {mid_send} processing",
        )
    )
    assert statuses() == {"sent": TOTAL}
    assert delivery.lost == 0
    assert delivery.duplicates <= mid_send
    assert held >= 20
    check_rate_and_quota(smtp_sink, services)
