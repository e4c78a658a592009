"""A rate-limited service's lease, its back-off, and the service's state at the moment a claimed mail starts."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from config.services import get_config_by_category
from queues.models import EmailService, SubTask
from queues.scheduler.claim import ClaimStatus, claim_subtasks, claims_start
from queues.scheduler.outcomes import OutcomeRecorder, SendResult
from queues.scheduler.transports import SENT, Delivery
from queues.services import service_set_enabled, task_create


def claim(limit: int = 1):
    return claim_subtasks(worker_id="w", limit=limit, queue_config=get_config_by_category("queue"))


def make_task(owner, n: int):
    return task_create(
        owner=owner, name="t", subject="s", body_text="b", recipients=[f"r{i}@x.example" for i in range(n)]
    )


def sent(claim_, item) -> SendResult:
    now = timezone.now()
    return SendResult(
        item=item,
        token=claim_.token,
        delivery=Delivery(SENT, 250, "ok"),
        started_at=now,
        finished_at=now,
        rate=1.0,
        lease=claim_.leases.get(item.service_id),
    )


def record(results: list[SendResult]) -> None:
    config = get_config_by_category("queue")
    recorder = OutcomeRecorder(worker_id="w")
    recorder.finish(recorder.record(results, queue_config=config), queue_config=config)


def test_a_late_record_leaves_the_lease_of_a_later_claim_alone(email_service_factory, user, queue_config):
    queue_config(send_lease_seconds=30)
    service = email_service_factory(sending_rate=1.0)
    make_task(user, 2)
    first = claim()
    # The first worker stalls past its lease; another worker claims the service.
    EmailService.objects.filter(pk=service.pk).update(next_available_at=timezone.now() - dt.timedelta(seconds=1))
    second = claim()
    assert second.items and second.leases[service.pk] != first.leases[service.pk]

    record([sent(first, first.items[0])])

    service.refresh_from_db()
    assert service.next_available_at == second.leases[service.pk]  # still held for the second claim's send
    assert SubTask.objects.get(pk=first.items[0].id).status == "sent"


def test_a_record_ends_its_own_lease_at_the_services_current_rate(email_service_factory, user):
    service = email_service_factory(sending_rate=1.0)
    make_task(user, 1)
    taken = claim()
    EmailService.objects.filter(pk=service.pk).update(sending_rate=30.0)  # raised while the mail was out
    before = timezone.now()

    record([sent(taken, taken.items[0])])

    service.refresh_from_db()
    assert before + dt.timedelta(seconds=30) <= service.next_available_at <= timezone.now() + dt.timedelta(seconds=30)


def test_a_lease_outlasts_a_sending_rate_longer_than_the_lease(email_service_factory, user, queue_config):
    # If the worker dies between the send and the record, the service is free
    # at the lease's end: that must not come sooner than sending_rate after the send.
    queue_config(send_lease_seconds=120)
    service = email_service_factory(sending_rate=600.0)
    make_task(user, 1)

    taken = claim()

    service.refresh_from_db()
    assert service.next_available_at - taken.started_at == dt.timedelta(seconds=720)


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


def test_a_claim_leases_no_more_rate_limited_services_than_the_worker_can_send_through(email_service_factory, user):
    services = [email_service_factory(sending_rate=1.0) for _ in range(3)]
    make_task(user, 5)
    config = get_config_by_category("queue")

    taken = claim_subtasks(worker_id="w", limit=5, queue_config=config, max_leases=1)

    assert len(taken.items) == 1 and len(taken.leases) == 1
    leased = EmailService.objects.filter(pk__in=[s.pk for s in services], next_available_at__gt=timezone.now())
    assert leased.count() == 1  # the other two stay free for other workers
    busy = claim_subtasks(worker_id="w", limit=5, queue_config=config, max_leases=0)
    assert busy.status is ClaimStatus.SENDERS_BUSY and busy.items == []


def test_a_busy_worker_still_claims_in_bulk_through_a_service_without_a_rate(email_service_factory, user):
    email_service_factory(sending_rate=1.0)
    email_service_factory(sending_rate=0)
    make_task(user, 5)

    taken = claim_subtasks(worker_id="w", limit=5, queue_config=get_config_by_category("queue"), max_leases=0)

    assert len(taken.items) == 5 and taken.leases == {}
