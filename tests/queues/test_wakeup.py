"""Idle schedulers learn of new work through PostgreSQL notifications, and poll when they cannot listen."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from queues.models import SubTask
from queues.scheduler.claim import claim_subtasks, claims_release
from queues.services import service_set_enabled, task_create, task_pause, task_resume
from queues.wakeup import CHANNEL, LISTENER_APPLICATION_NAME
from tests.schedulers import wait_until

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

# The idle poll in these tests: far longer than any wait below, so only a notification can wake the scheduler.
LONG_POLL = 60


def one_mail_task(owner, address: str):
    return task_create(owner=owner, name="wake", subject="Hi", body_text="Hello.", recipients=[address])


def listener_pids() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [LISTENER_APPLICATION_NAME],
        )
        return [row[0] for row in cursor.fetchall()]


def start_idle_scheduler(schedulers, queue_config, email_service_factory, smtp_sink):
    queue_config(no_work_sleep_seconds=LONG_POLL, no_service_sleep_seconds=LONG_POLL)
    email_service_factory(port=smtp_sink.port, sending_rate=0)
    proc = schedulers.start_one("--maintenance", "off")
    wait_until(lambda: len(listener_pids()) == 1, timeout=30, what="the scheduler listening")
    # Listening, it claims once (it may have missed something), finds nothing and waits.
    time.sleep(1.5)
    return proc


@pytest.fixture
def listening():
    """A connection listening on the work channel, as a scheduler's listener does."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")

        def received() -> int:
            return len(list(conn.notifies(timeout=0.5)))

        yield received


def test_an_idle_scheduler_sends_a_new_task_long_before_its_poll(
    schedulers, queue_config, email_service_factory, smtp_sink, user
):
    start_idle_scheduler(schedulers, queue_config, email_service_factory, smtp_sink)

    one_mail_task(user, "first@wake.example")
    # Its poll would take 60 s: only the notification can bring the mail this soon.
    wait_until(lambda: smtp_sink.count() == 1, timeout=20, what="the mail of the new task")
    one_mail_task(user, "second@wake.example")
    wait_until(lambda: smtp_sink.count() == 2, timeout=20, what="the mail of the second task")
    assert sorted(r.recipient for r in smtp_sink.snapshot()) == ["first@wake.example", "second@wake.example"]


def test_a_scheduler_whose_listening_connection_is_lost_listens_again(
    schedulers, queue_config, email_service_factory, smtp_sink, user
):
    proc = start_idle_scheduler(schedulers, queue_config, email_service_factory, smtp_sink)
    (old,) = listener_pids()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [old])
    wait_until(lambda: listener_pids() not in ([], [old]), timeout=30, what="a new listening connection")
    time.sleep(1.5)

    one_mail_task(user, "after@wake.example")
    wait_until(lambda: smtp_sink.count() == 1, timeout=20, what="the mail of a task created after the loss")
    log = Path(proc.log_path).read_text()
    assert "lost the connection listening for new work" in log
    assert "listening for new work again" in log


def test_new_resumed_and_given_back_work_and_an_enabled_service_notify(
    listening, user, email_service_factory, queue_config
):
    assert listening() == 0
    task = one_mail_task(user, "a@wake.example")
    assert listening() == 1

    task_pause(task=task)
    assert listening() == 0  # pausing makes nothing claimable
    task_resume(task=task)
    assert listening() == 1

    service = email_service_factory(is_enabled=False)
    listening()  # the service's creation notifies too: a new service may make waiting work sendable
    service_set_enabled(service=service, enabled=True)
    assert listening() == 1

    claim = claim_subtasks(worker_id="w", limit=5, queue_config=queue_config())
    assert [i.task_id for i in claim.items] == [task.pk]
    listening()
    claims_release(token=claim.token, ids=[i.id for i in claim.items], quota_timezone="UTC")
    assert listening() == 1
    assert SubTask.objects.get().status == SubTask.Status.PENDING


def test_nothing_is_notified_before_the_work_is_committed(listening, user):
    from django.db import transaction

    with transaction.atomic():
        one_mail_task(user, "a@wake.example")
        # A scheduler woken now would not see the task yet.
        assert listening() == 0
    assert listening() == 1
