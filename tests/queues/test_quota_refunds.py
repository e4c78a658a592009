"""Quota given back for mail claimed and never sent: once, and to the day it was charged."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from config.services import get_config_by_category
from queues.models import EmailService, SubTask
from queues.scheduler.claim import claim_subtasks, claims_release
from queues.services import task_create


def claim(owner, n: int):
    task_create(owner=owner, name="t", subject="s", body_text="b", recipients=[f"r{i}@example.org" for i in range(n)])
    return claim_subtasks(worker_id="w", limit=n, queue_config=get_config_by_category("queue"))


def release(claimed) -> int:
    return claims_release(token=claimed.token, ids=[i.id for i in claimed.items], quota_timezone="UTC")


def test_a_release_refunds_the_claims_charge_once(email_service_factory, user):
    service = email_service_factory(sending_rate=0, daily_quota=10)
    claimed = claim(user, 3)

    assert release(claimed) == 3
    assert release(claimed) == 0

    service.refresh_from_db()
    assert (service.used_quota, service.quota_date) == (0, timezone.now().date())


def test_a_release_after_midnight_refunds_nothing_from_the_new_day(email_service_factory, user):
    service = email_service_factory(sending_rate=0, daily_quota=10)
    claimed = claim(user, 2)
    # Claimed yesterday; since midnight the service counts a new day with 5 sends.
    yesterday = timezone.now() - dt.timedelta(days=1)
    SubTask.objects.update(claimed_at=yesterday)
    EmailService.objects.filter(pk=service.pk).update(used_quota=5, quota_date=timezone.now().date())

    assert release(claimed) == 2

    service.refresh_from_db()
    assert service.used_quota == 5
