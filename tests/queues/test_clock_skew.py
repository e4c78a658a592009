"""Scheduler processes whose hosts' clocks are off by minutes or a day keep every cross-process promise.

Each test runs real ``run_scheduler`` processes, one of them under a skewed
wall clock (libfaketime; its monotonic clock stays real), against PostgreSQL
and a real SMTP server. Every moment compared across processes comes from the
database's clock, so the skew changes nothing.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from common.dbclock import db_now
from config.services import get_config_by_category
from queues.models import SubTask, UserQueue
from queues.scheduler.claim import claim_subtasks, quota_day
from queues.services import task_create
from tests.processes import child_environment, skewed_clock
from tests.schedulers import ROOT, wait_until

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def make_task(owner, n: int):
    return task_create(
        owner=owner,
        name="t",
        subject="s",
        body_text="b",
        recipients=[f"r{i}@{owner.username}.example" for i in range(n)],
    )


def test_a_host_lagging_300_s_starts_no_mail_closer_than_the_rate_beside_another(
    smtp_sink, email_service_factory, user, queue_config, schedulers
):
    # The lagging host's claims once wrote a lease that had already ended by the
    # database's clock; its rate slots are the database's time, its waits monotonic.
    smtp_sink.latency = 1.0
    queue_config(send_lease_seconds=120, claim_batch_size=1)
    service = email_service_factory(port=smtp_sink.port, sending_rate=2.0)
    make_task(user, 3)

    lagging = schedulers.start_one("--until-empty", worker_id="lagging", env=skewed_clock("-300s"))
    wait_until(lambda: SubTask.objects.filter(claimed_by="lagging").exists(), timeout=60, what="the lagging claim")
    schedulers.start_one("--until-empty", worker_id="on-time")
    assert schedulers.wait(timeout=120) == [0, 0], schedulers.logs()

    starts = sorted(r.started_at for r in smtp_sink.snapshot())  # MAIL FROM
    assert len(starts) == 3
    assert min(b - a for a, b in itertools.pairwise(starts)) >= service.sending_rate - 0.002
    assert lagging.returncode == 0


def test_a_host_a_day_ahead_counts_the_quota_in_the_databases_day(
    smtp_sink, email_service_factory, user, queue_config, schedulers
):
    queue_config(claim_batch_size=1)
    service = email_service_factory(port=smtp_sink.port, sending_rate=0)
    make_task(user, 2)
    today = quota_day(db_now(), "UTC")

    schedulers.start_one("--once", worker_id="tomorrow", env=skewed_clock("+1d"))
    assert schedulers.wait(timeout=60) == [0], schedulers.logs()
    service.refresh_from_db()
    assert (service.quota_date, service.used_quota) == (today, 1)

    # A host on the database's day goes on counting the same day, not from zero.
    assert len(claim_subtasks(worker_id="here", limit=1, queue_config=get_config_by_category("queue")).items) == 1
    service.refresh_from_db()
    assert (service.quota_date, service.used_quota) == (today, 2)


def test_a_lagging_host_sends_the_users_it_serves_to_the_back_of_the_rotation(
    smtp_sink, email_service_factory, user_factory, queue_config, schedulers
):
    queue_config(claim_batch_size=1)
    email_service_factory(port=smtp_sink.port, sending_rate=0)
    first, second = user_factory.create_batch(2)
    make_task(first, 2)
    make_task(second, 2)

    schedulers.start_one("--once", worker_id="lagging", env=skewed_clock("-300s"))
    assert schedulers.wait(timeout=60) == [0], schedulers.logs()

    assert SubTask.objects.get(status="sent").owner_id == first.pk
    turns = dict(UserQueue.objects.values_list("user_id", "turn"))
    assert turns[first.pk] > turns[second.pk]  # served, so behind the user still waiting


def test_a_task_created_on_a_host_running_ahead_is_claimable_at_once(email_service_factory, user):
    # The web process that creates a task may run on another host than the schedulers.
    email_service_factory(sending_rate=0)
    script = (
        "import django; django.setup();"
        "from accounts.models import User; from queues.services import task_create;"
        f"task_create(owner=User.objects.get(pk='{user.pk}'), name='t', subject='s', body_text='b',"
        " recipients=['a@x.example', 'b@x.example'])"
    )
    subprocess.run(
        [sys.executable, "-c", script],
        env={**child_environment(), **skewed_clock("+300s")},
        cwd=ROOT,
        check=True,
        timeout=60,
    )

    taken = claim_subtasks(worker_id="here", limit=2, queue_config=get_config_by_category("queue"))

    assert len(taken.items) == 2
