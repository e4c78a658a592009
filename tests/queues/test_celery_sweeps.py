"""The periodic sweeps through a real Celery worker and a real Redis broker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.management import call_command

from queues.models import MaintenanceRun
from tests.processes import child_environment
from tests.schedulers import ROOT, wait_until

# The Redis the run was given (CI and parallel runs each use their own database).
BROKER = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14")


@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_runs_a_sweep_sent_through_redis(tmp_path):
    from celery import Celery

    env = {**child_environment(), "CELERY_BROKER_URL": BROKER}
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "edm",
            "worker",
            "--pool",
            "solo",
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
            "--queues",
            "celery",
            "--hostname",
            "test@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Not the current app: shared tasks called later in this test process
        # (eager, as the test settings have it) must not find this one.
        with Celery("edm-test", broker=BROKER, set_as_current=False) as client:
            client.send_task("queues.run_sweep", args=["reset_quotas"])
        wait_until(
            lambda: MaintenanceRun.objects.filter(name="reset_quotas", runs=1).exists(),
            timeout=60,
            what=f"the worker to run the sweep:\n{(tmp_path / 'worker.log').read_text()}",
        )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    assert "queues.run_sweep" in (tmp_path / "worker.log").read_text()


def test_run_scheduler_runs_the_sweeps_itself_only_without_a_broker(db, settings, monkeypatch):
    seen = []

    class FakeWorker:
        def __init__(self, **kwargs):
            seen.append(kwargs["maintenance"])

        def run(self):
            return 0

    monkeypatch.setattr("queues.management.commands.run_scheduler.SchedulerWorker", FakeWorker)
    settings.CELERY_BROKER_URL = None
    call_command("run_scheduler")
    settings.CELERY_BROKER_URL = BROKER
    call_command("run_scheduler")
    call_command("run_scheduler", "--maintenance", "on")
    call_command("run_scheduler", "--maintenance", "on", "--once")
    assert seen == [True, False, True, False]
