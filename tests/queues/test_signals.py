"""The queue tells listeners what happened (queues.signals) and runs other apps' sweeps (register_sweep)."""

from __future__ import annotations

import pytest

from monitoring import sweeps as monitoring_sweeps
from monitoring.models import Alert
from queues import signals
from queues.maintenance import SWEEPS, Sweep, register_sweep, run_sweep
from queues.models import MaintenanceRun, Task
from queues.services import task_fail

pytestmark = pytest.mark.django_db


@pytest.fixture
def heard():
    """What a receiver of task_failed hears: (its arguments, the sender)."""
    calls = []

    def receiver(sender, **kwargs):
        calls.append(({k: v for k, v in kwargs.items() if k != "signal"}, sender))

    signals.task_failed.connect(receiver, dispatch_uid="test.task_failed")
    yield calls
    signals.task_failed.disconnect(dispatch_uid="test.task_failed")


def test_a_failed_task_is_announced_with_what_the_alert_says(task, heard):
    assert task_fail(task_id=task.pk, reason="templates broken") is True

    assert heard == [
        ({"task_id": task.pk, "name": task.name, "owner_id": task.owner_id, "reason": "templates broken"}, Task)
    ]
    alert = Alert.objects.get(alert_type="task_failed")
    assert (alert.subject, alert.severity, alert.message) == (
        f"task:{task.pk}",
        "critical",
        f"Task {task.name} failed: templates broken",
    )


def test_a_task_already_finished_is_not_announced_again(task, heard):
    task_fail(task_id=task.pk, reason="first")
    assert task_fail(task_id=task.pk, reason="second") is False
    assert [kwargs["reason"] for kwargs, _ in heard] == ["first"]
    assert Alert.objects.filter(alert_type="task_failed").count() == 1


def test_monitoring_adds_its_sweeps_to_the_queues():
    assert SWEEPS["alert_waiting_tasks"] is monitoring_sweeps.SWEEPS[0]
    assert SWEEPS["sample_queue"].func is monitoring_sweeps.sample_queue


def test_a_registered_sweep_is_run_and_recorded_like_the_queues_own():
    register_sweep(Sweep("probe", lambda: {"probed": 2}, 60, "Checks that registered sweeps run."))
    try:
        assert run_sweep("probe") == {"probed": 2}
        assert run_sweep("probe") is None  # ran less than its interval ago
        run = MaintenanceRun.objects.get(name="probe")
        assert (run.runs, run.totals) == (1, {"probed": 2})
    finally:
        del SWEEPS["probe"]
