"""The edm_ Prometheus metrics: the DB collector at /metrics, and the scheduler's own counters."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest
from django.core.management import call_command
from django.test import Client

from monitoring import metrics
from queues import metrics as scheduler_metrics
from queues.maintenance import run_sweep
from queues.models import SubTask
from queues.services import task_create
from tests.metrics_auth import METRICS_AUTH, METRICS_HEADERS
from tests.queues.test_recovery import beat, claimed
from tests.schedulers import wait_until


def scrape(client: Client) -> str:
    response = client.get("/metrics", **METRICS_AUTH)
    assert response.status_code == 200
    return response.content.decode()


def test_metrics_page_shows_the_queue_figures(
    subtask_factory, email_service_factory, heartbeat_factory, alert_factory, task_wait_metric_factory
):
    service = email_service_factory(name="relay-1", total_sent=12, total_failed=3)
    subtask_factory.create_batch(2)
    subtask_factory(status="processing", service=service)
    heartbeat_factory()
    alert_factory(severity="critical")
    alert_factory(severity="critical", status="resolved")

    text = scrape(Client())

    for line in [
        'edm_queue_subtasks{status="pending"} 2.0',
        'edm_queue_subtasks{status="processing"} 1.0',
        'edm_queue_subtasks{status="allocated"} 0.0',
        "edm_queue_due_subtasks 2.0",
        "edm_ready_services 1.0",
        "edm_live_schedulers 1.0",
        'edm_open_alerts{severity="critical"} 1.0',
        'edm_open_alerts{severity="emergency"} 0.0',
        'edm_service_sent_total{service="relay-1"} 12.0',
        'edm_service_failed_total{service="relay-1"} 3.0',
        "edm_oldest_waiting_task_seconds 0.0",
        "edm_queue_metrics_up 1.0",
    ]:
        assert line in text.splitlines(), line


def test_a_database_error_reports_metrics_down_without_failing_the_scrape(db, monkeypatch):
    from django.db import OperationalError

    def broken():
        raise OperationalError("down")
        yield  # pragma: no cover

    monkeypatch.setattr(metrics.QueueCollector, "_read", staticmethod(broken))
    text = scrape(Client())
    assert "edm_queue_metrics_up 0.0" in text.splitlines()


def test_the_sweeps_runs_and_recoveries_are_read_from_the_database(email_service_factory, user):
    """Whichever process ran them (a scheduler, or Celery beat's worker), /metrics shows the sweeps."""
    email_service_factory(sending_rate=0)
    text = scrape(Client()).splitlines()
    assert 'edm_sweep_runs_total{sweep="recover_dead_workers"} 0.0' in text
    assert 'edm_sweep_last_finished_timestamp_seconds{sweep="recover_dead_workers"} 0.0' in text
    assert 'edm_sweep_recovered_subtasks_total{rule="dead_worker"} 0.0' in text

    beat("w-dead", 600)
    claimed(user, 3, worker="w-dead")
    before = time.time()
    assert run_sweep("recover_dead_workers", force=True) == {"dead_worker.requeued": 3}
    run_sweep("recover_stuck", force=True)  # nothing left to give back: adds nothing

    text = scrape(Client()).splitlines()
    assert 'edm_sweep_runs_total{sweep="recover_dead_workers"} 1.0' in text
    assert 'edm_sweep_runs_total{sweep="recover_stuck"} 1.0' in text
    assert 'edm_sweep_runs_total{sweep="prune"} 0.0' in text
    assert 'edm_sweep_recovered_subtasks_total{rule="dead_worker"} 3.0' in text
    assert 'edm_sweep_recovered_subtasks_total{rule="timeout"} 0.0' in text
    (finished,) = [
        line
        for line in text
        if line.startswith('edm_sweep_last_finished_timestamp_seconds{sweep="recover_dead_workers"}')
    ]
    assert float(finished.split()[-1]) >= before - 1


def sample(name: str, **labels: str) -> float:
    return scheduler_metrics.SCHEDULER_REGISTRY.get_sample_value(name, labels) or 0.0


def test_recovered_counts_subtasks_by_rule():
    before = sample("edm_recovered_subtasks_total", rule="dead_worker")
    scheduler_metrics.count_recovered(
        {"dead_worker.requeued": 2, "dead_worker.already_done": 5, "stuck_task.requeued": 1}
    )
    assert sample("edm_recovered_subtasks_total", rule="dead_worker") - before == 2
    assert sample("edm_recovered_subtasks_total", rule="stuck_task") == 0


def queue_mails(owner, n: int):
    return task_create(
        owner=owner,
        name="news",
        subject="Hi",
        body_text="Hello",
        recipients=[f"r{i}@{owner.username}.example" for i in range(n)],
    )


@pytest.mark.django_db(transaction=True)
def test_the_scheduler_counts_sends_claims_and_first_send_waits(smtp_sink, email_service_factory, user):
    email_service_factory(name="metrics-relay", port=smtp_sink.port, sending_rate=0)
    queue_mails(user, 4)
    before = {
        "sent": sample("edm_mails_sent_total", service="metrics-relay"),
        "sends": sample("edm_send_seconds_count", outcome="sent"),
        "claims": sample("edm_claim_seconds_count", result="claimed"),
        "waits": sample("edm_first_send_wait_seconds_count"),
    }

    call_command("run_scheduler", "--until-empty", "--maintenance", "off")

    assert sample("edm_mails_sent_total", service="metrics-relay") - before["sent"] == 4
    assert sample("edm_send_seconds_count", outcome="sent") - before["sends"] == 4
    assert sample("edm_claim_seconds_count", result="claimed") - before["claims"] >= 1
    assert sample("edm_first_send_wait_seconds_count") - before["waits"] == 1


@pytest.mark.django_db(transaction=True)
def test_failed_sends_are_counted_by_kind(smtp_sink, email_service_factory, user, queue_config):
    queue_config(max_retries=0)
    email_service_factory(name="rejecting-relay", port=smtp_sink.port, sending_rate=0)
    task_create(
        owner=user,
        name="news",
        subject="Hi",
        body_text="Hello",
        recipients=["permfail1@x.example", "tempfail1@x.example", "ok@x.example"],
    )
    before = {
        kind: sample("edm_mails_failed_total", service="rejecting-relay", kind=kind)
        for kind in ("permanent", "transient")
    }

    call_command("run_scheduler", "--until-empty", "--maintenance", "off")

    after = {
        kind: sample("edm_mails_failed_total", service="rejecting-relay", kind=kind)
        for kind in ("permanent", "transient")
    }
    assert {kind: after[kind] - before[kind] for kind in after} == {"permanent": 1, "transient": 1}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_run_scheduler_metrics_port_serves_the_scheduler_metrics(smtp_sink, email_service_factory, user, schedulers):
    email_service_factory(name="port-relay", port=smtp_sink.port, sending_rate=0)
    queue_mails(user, 3)
    port = free_port()

    schedulers.start_one("--metrics-port", str(port), "--maintenance", "off")
    wait_until(lambda: SubTask.objects.filter(status="sent").count() == 3, timeout=60, what="three mails sent")

    def served() -> str:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=METRICS_HEADERS)
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read().decode()

    wait_until(lambda: 'edm_mails_sent_total{service="port-relay"} 3.0' in served(), timeout=10, what="the counter")
    text = served()
    assert "edm_claim_seconds_bucket" in text
    assert "edm_first_send_wait_seconds_count 1.0" in text
    assert "edm_queue_subtasks" not in text  # the DB collector stays out of the scheduler
    assert schedulers.terminate() == [0]


def test_metrics_port_is_validated(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="invalid port_number value"):
        call_command("run_scheduler", "--metrics-port", "70000")
