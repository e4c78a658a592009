"""Rate slots at claim and record, the process's clock estimate, and the service's state when a claimed mail starts."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest
from django.utils import timezone

from config.services import get_config_by_category
from queues.models import EmailService, SubTask
from queues.scheduler.claim import ClaimStatus, claim_subtasks, claims_start
from queues.scheduler.outcomes import OutcomeRecorder, SendResult
from queues.scheduler.pool import ConnectionPools
from queues.scheduler.slots import (
    CLOCK_SAMPLE_SECONDS,
    SLOT_BOUNDARY_SECONDS,
    SLOT_LEAD_SECONDS,
    SLOT_WINDOW_SECONDS,
    DbClock,
    StartGate,
    StartMissed,
)
from queues.scheduler.transports import SENT, Delivery, ServiceConfig
from queues.services import service_set_enabled, task_create


def claim(limit: int = 1):
    return claim_subtasks(worker_id="w", limit=limit, queue_config=get_config_by_category("queue"))


def make_task(owner, n: int):
    return task_create(
        owner=owner, name="t", subject="s", body_text="b", recipients=[f"r{i}@x.example" for i in range(n)]
    )


def sent(claim_, item, rate: float = 1.0) -> SendResult:
    now = timezone.now()
    return SendResult(
        item=item,
        token=claim_.token,
        delivery=Delivery(SENT, 250, "ok"),
        started_at=now,
        finished_at=now,
        rate=rate,
    )


def record(results: list[SendResult]) -> None:
    config = get_config_by_category("queue")
    recorder = OutcomeRecorder(worker_id="w")
    recorder.finish(recorder.record(results, queue_config=config), queue_config=config)


def test_a_record_leaves_the_slots_handed_out_since_alone(email_service_factory, user):
    service = email_service_factory(sending_rate=0.2)
    make_task(user, 8)
    first = claim(4)
    second_free = timezone.now() + dt.timedelta(seconds=5)  # as if another claim took later slots
    EmailService.objects.filter(pk=service.pk).update(next_available_at=second_free)

    record([sent(first, item, rate=0.2) for item in first.items])

    service.refresh_from_db()
    assert service.next_available_at == second_free
    assert set(SubTask.objects.filter(pk__in=[i.id for i in first.items]).values_list("status", flat=True)) == {"sent"}


def test_mail_claimed_unspaced_spaces_the_next_send_once_the_service_has_a_rate(email_service_factory, user):
    service = email_service_factory(sending_rate=0)
    make_task(user, 1)
    taken = claim()
    EmailService.objects.filter(pk=service.pk).update(sending_rate=30.0)  # set while the mail was out
    before = timezone.now()

    record([sent(taken, taken.items[0], rate=0)])

    service.refresh_from_db()
    assert before + dt.timedelta(seconds=30) <= service.next_available_at <= timezone.now() + dt.timedelta(seconds=30)


def test_a_rate_longer_than_the_horizon_takes_one_slot_and_holds_the_service_for_it(email_service_factory, user):
    service = email_service_factory(sending_rate=600.0)
    make_task(user, 3)

    taken = claim(3)

    assert len(taken.items) == 1
    service.refresh_from_db()
    held = dt.timedelta(seconds=SLOT_LEAD_SECONDS + 600 + SLOT_WINDOW_SECONDS + SLOT_BOUNDARY_SECONDS)
    assert service.next_available_at - taken.started_at == held


def test_the_clock_estimate_keeps_its_most_precise_recent_sample():
    now = [100.0]
    clock = DbClock(clock=lambda: now[0])
    base = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    clock.sample(10.0, base, 10.010)  # a slow round trip: +-5 ms
    clock.sample(11.0, base + dt.timedelta(seconds=1.0004), 11.0002)  # +-0.1 ms
    clock.sample(12.0, base + dt.timedelta(seconds=2), 12.020)  # slower again: not taken
    now[0] = 11.0001

    moment, error = clock.monotonic_at(base + dt.timedelta(seconds=5))

    assert abs(moment - (11.0001 + 5 - 1.0004)) < 1e-6
    assert error < 0.0002
    now[0] = 11.0 + CLOCK_SAMPLE_SECONDS + 1  # too old: the next sample replaces it whatever its error
    clock.sample(now[0], base + dt.timedelta(seconds=30), now[0] + 0.020)
    assert clock.monotonic_at(base + dt.timedelta(seconds=30))[1] >= 0.0099


def test_the_clock_estimate_gives_the_databases_time_now_from_its_best_sample():
    now = [50.0]
    clock = DbClock(clock=lambda: now[0])
    base = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert clock.now() is None  # no claim yet: the caller falls back on the host's clock
    clock.sample(10.0, base, 10.010)  # midpoint 10.005
    now[0] = 12.005

    assert clock.now() == base + dt.timedelta(seconds=2)


def test_a_process_asks_for_a_larger_share_only_while_its_share_is_under_the_cap():
    service = ServiceConfig(
        id=uuid.uuid4(),
        name="s",
        transport="smtp",
        host="127.0.0.1",
        port=25,
        username="",
        password="",
        security="none",
        timeout=5,
        backend_path="",
        backend_options={},
        from_email="s@example.com",
        version="1",
        max_connections=2,
    )
    pools = ConnectionPools(shared=True)
    assert not pools.try_acquire(service)  # shared: nothing until a share is granted
    assert pools.below_cap(service)
    pools.set_allowed({service.id: 2})
    assert [pools.try_acquire(service), pools.try_acquire(service), pools.try_acquire(service)] == [True, True, False]
    assert not pools.below_cap(service)  # refused for the cap itself: no renewal can help


def test_a_send_waits_for_its_window_and_refuses_to_start_after_it():
    gate = StartGate()
    start = time.monotonic() + 0.05
    gate.enter((start, start + 1), 0.0)
    assert time.monotonic() >= start
    gate.written()
    with pytest.raises(StartMissed):
        gate.enter((time.monotonic() - 1, time.monotonic() - 0.5), 0.0)


def test_a_start_waits_for_the_previous_write_and_a_rate_after_it():
    now = [10.0]
    gate = StartGate(clock=lambda: now[0])
    gate.enter((10.0, 10.003), 0.05)
    now[0] = 10.040  # the first send was held up: its MAIL FROM leaves 40 ms after its check
    gate.written()
    # The next slot's window (10.053-10.056) opens before 10.040 + 0.05: it cannot be kept.
    with pytest.raises(StartMissed):
        gate.enter((10.053, 10.056), 0.05)
    now[0] = 10.095
    gate.enter((10.094, 10.097), 0.05)  # 55 ms after the last write: starts
    gate.written()


def test_a_start_waits_while_an_earlier_send_is_still_writing():
    gate = StartGate()
    gate.enter((0.0, time.monotonic() + 5), 0.0)
    entered = threading.Event()

    def second() -> None:
        gate.enter((0.0, time.monotonic() + 5), 0.0)
        entered.set()
        gate.written()

    thread = threading.Thread(target=second)
    thread.start()
    assert not entered.wait(0.1)  # the first has not written its MAIL FROM yet
    gate.written()
    assert entered.wait(5)
    thread.join()


def test_mail_claimed_through_a_service_disabled_since_is_not_started(email_service_factory, user):
    service = email_service_factory(sending_rate=0)
    make_task(user, 3)
    taken = claim(3)
    service_set_enabled(service=service, enabled=False)

    started = claims_start(token=taken.token, ids=[i.id for i in taken.items], unlimited={service.pk})

    assert started == set()
    assert set(SubTask.objects.values_list("status", flat=True)) == {"allocated"}


def test_mail_claimed_unspaced_is_not_started_once_the_service_has_a_rate(email_service_factory, user):
    service = email_service_factory(sending_rate=0)
    make_task(user, 3)
    taken = claim(3)
    EmailService.objects.filter(pk=service.pk).update(sending_rate=2.0)

    started = claims_start(token=taken.token, ids=[i.id for i in taken.items], unlimited={service.pk})

    assert started == set()  # given back, claimed again one at a time under the rate


def test_mail_claimed_under_unchanged_settings_starts(email_service_factory, user):
    service = email_service_factory(sending_rate=0)
    make_task(user, 3)
    taken = claim(3)

    started = claims_start(token=taken.token, ids=[i.id for i in taken.items], unlimited={service.pk})

    assert started == {i.id for i in taken.items}
    assert set(SubTask.objects.values_list("status", flat=True)) == {"processing"}


def test_a_claim_takes_no_more_rate_slots_than_the_worker_can_send_through(email_service_factory, user):
    services = [email_service_factory(sending_rate=1.0) for _ in range(3)]
    make_task(user, 5)
    config = get_config_by_category("queue")

    taken = claim_subtasks(worker_id="w", limit=5, queue_config=config, max_leases=1)

    assert len(taken.items) == 1 and len(taken.slots) == 1
    leased = EmailService.objects.filter(pk__in=[s.pk for s in services], next_available_at__gt=timezone.now())
    assert leased.count() == 1  # the other two stay free for other workers
    busy = claim_subtasks(worker_id="w", limit=5, queue_config=config, max_leases=0)
    assert busy.status is ClaimStatus.SENDERS_BUSY and busy.items == []


def test_a_busy_worker_still_claims_in_bulk_through_a_service_without_a_rate(email_service_factory, user):
    email_service_factory(sending_rate=1.0)
    email_service_factory(sending_rate=0)
    make_task(user, 5)

    taken = claim_subtasks(worker_id="w", limit=5, queue_config=get_config_by_category("queue"), max_leases=0)

    assert len(taken.items) == 5 and taken.slots == {}
