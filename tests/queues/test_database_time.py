"""Recovery and maintenance compare moments on the database's clock, whatever the host's says.

PostgreSQL only: on SQLite every process shares the machine's clock, so the
host's clock is the database's there. The host clock is moved with
time_machine; the database's is not.
"""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from common.dbclock import db_now
from config.services import get_config_by_category
from queues.maintenance import due_sweeps, run_sweep
from queues.models import MaintenanceRun, WorkerHeartbeat
from queues.recovery import FailureRecoveryService
from queues.scheduler.claim import claim_subtasks
from queues.services import task_create

pytestmark = pytest.mark.postgres_only


def heartbeat(seconds_ago: float) -> None:
    seen = db_now() - dt.timedelta(seconds=seconds_ago)
    WorkerHeartbeat.objects.create(worker_id="w1", hostname="h", pid=1, started_at=seen, last_seen_at=seen)


def claim_one(owner) -> None:
    task_create(owner=owner, name="t", subject="s", body_text="b", recipients=["a@example.org"])
    claim_subtasks(worker_id="w1", limit=1, queue_config=get_config_by_category("queue"))


@pytest.mark.parametrize(
    ("host_offset", "beat_seconds_ago", "recovered"),
    [
        pytest.param(120, 0, 0, id="host-ahead-live-worker-stays-live"),
        pytest.param(-120, 60, 1, id="host-behind-dead-worker-is-seen"),
    ],
)
def test_dead_workers_are_judged_on_the_databases_clock(
    email_service_factory, user, host_offset, beat_seconds_ago, recovered
):
    email_service_factory(sending_rate=0)
    heartbeat(beat_seconds_ago)
    claim_one(user)

    with time_machine.travel(dt.timedelta(seconds=host_offset)):
        report = FailureRecoveryService().run(rules=("dead_worker",))

    assert report.recovered == recovered


def test_a_host_a_day_ahead_does_not_reset_todays_quota(email_service_factory):
    today = db_now().date()
    service = email_service_factory(used_quota=5, quota_date=today)

    with time_machine.travel(dt.timedelta(days=1)):
        result = run_sweep("reset_quotas")

    assert result == {"services_reset": 0, "quota_day": today.isoformat()}
    service.refresh_from_db()
    assert (service.used_quota, service.quota_date) == (5, today)


def test_a_host_behind_still_runs_sweeps_that_are_due(db):
    MaintenanceRun.objects.create(name="recover_stuck", last_started_at=db_now() - dt.timedelta(seconds=120))

    with time_machine.travel(dt.timedelta(hours=-1)):
        due = due_sweeps()
        ran = run_sweep("recover_stuck")

    assert "recover_stuck" in due
    assert ran == {}
    assert MaintenanceRun.objects.get(name="recover_stuck").runs == 1
