"""Mail claimed but not yet started goes out only under its service's current settings (a real scheduler)."""

from __future__ import annotations

from collections import Counter

import pytest

from queues.models import SubTask
from queues.services import service_set_enabled, task_create
from tests.schedulers import wait_until

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def test_disabling_a_service_stops_what_a_scheduler_has_already_claimed_through_it(
    smtp_sink, email_service_factory, user, queue_config, schedulers
):
    smtp_sink.latency = 0.3
    queue_config(claim_batch_size=10)
    service = email_service_factory(port=smtp_sink.port, sending_rate=0)
    task_create(owner=user, name="t", subject="s", body_text="b", recipients=[f"r{i}@x.example" for i in range(10)])
    scheduler = schedulers.start_one("--concurrency", "1")
    wait_until(lambda: SubTask.objects.filter(status="allocated").count() >= 5, timeout=60, what="a claimed batch")
    wait_until(lambda: smtp_sink.count() >= 1, timeout=60, what="the first mail")

    service_set_enabled(service=service, enabled=False)

    def settled() -> bool:
        return not SubTask.objects.filter(status__in=["allocated", "processing"]).exists()

    wait_until(settled, timeout=60, what="the claimed mail given back")
    statuses = Counter(SubTask.objects.values_list("status", flat=True))
    # At most what was on the wire or already marked started for the one sender
    # (it, and twice the senders queued behind it) went out; the rest is back in the queue.
    assert statuses["sent"] == smtp_sink.count() <= 4
    assert statuses["pending"] == 10 - statuses["sent"]
    assert not SubTask.objects.filter(status="pending").exclude(service=None).exists()
    assert scheduler.poll() is None


def test_mail_claimed_through_a_disabled_service_goes_back_and_out_through_another(
    smtp_sink, email_service_factory, user, queue_config, schedulers
):
    """Claimed mail waiting for a connection of a service that is then disabled must not hold the
    process: it goes back to the queue, and the process goes on claiming (through the other services)."""
    smtp_sink.latency = 0.3
    queue_config(claim_batch_size=10)
    first = email_service_factory(name="first", port=smtp_sink.port, sending_rate=0, max_connections=1)
    task_create(owner=user, name="t", subject="s", body_text="b", recipients=[f"r{i}@x.example" for i in range(30)])
    scheduler = schedulers.start_one("--concurrency", "4")
    wait_until(lambda: smtp_sink.count() >= 2, timeout=60, what="the first mails")

    service_set_enabled(service=first, enabled=False)
    second = email_service_factory(name="second", port=smtp_sink.port, sending_rate=0, from_email="second@edm.example")

    wait_until(
        lambda: not SubTask.objects.exclude(status="sent").exists(),
        timeout=30,
        what=f"every mail sent (statuses: {Counter(SubTask.objects.values_list('status', flat=True))})",
    )
    through_second = SubTask.objects.filter(service=second).count()
    assert through_second >= 30 - 10, through_second  # what the first had claimed but not started went back
    assert scheduler.poll() is None
