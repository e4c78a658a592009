"""The monitoring API: health, performance metrics, alerts and task wait metrics."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys

import pytest
import time_machine
from django.db import OperationalError

from common.api.filters import EMPTY
from monitoring.models import Alert
from monitoring.services import health
from tests.factories import QueueSampleFactory
from tests.schedulers import ROOT

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.timezone.utc)
HEALTH = "/api/monitoring/system-health"
PERF = "/api/monitoring/performance-metrics"
ALERTS = "/api/monitoring/alerts/"
WAITS = "/api/monitoring/task-wait-metrics/"


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield NOW


# --- health -------------------------------------------------------------------


def test_healthy_with_a_live_scheduler_and_staff_see_every_check(frozen, api, staff, heartbeat_factory, settings):
    settings.CELERY_BROKER_URL = None
    heartbeat_factory(worker_id="w1", last_seen_at=frozen - dt.timedelta(seconds=3))

    response = api.as_user(staff).get(HEALTH)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    checks = body["checks"]
    assert set(checks) == {
        "database",
        "cache",
        "broker",
        "schedulers",
        "ready_services",
        "backlog",
        "oldest_waiting_task",
        "open_alerts",
    }
    assert checks["schedulers"] == {"status": "ok", "live": 1, "workers": ["w1"]}
    assert checks["database"]["status"] == "ok"
    assert checks["broker"]["status"] == "skipped"  # no CELERY_BROKER_URL


def test_an_unreachable_broker_degrades_health(frozen, api, staff, heartbeat_factory, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    heartbeat_factory(worker_id="w1", last_seen_at=frozen - dt.timedelta(seconds=3))

    body = api.as_user(staff).get(HEALTH).json()

    assert body["status"] == "degraded"
    assert body["checks"]["broker"]["status"] == "degraded"
    assert body["checks"]["broker"]["message"].startswith("broker unavailable")


@pytest.mark.parametrize(
    "beat",
    [
        pytest.param(None, id="no-heartbeat"),
        pytest.param({"last_seen_at": NOW - dt.timedelta(seconds=31)}, id="stale"),
        pytest.param({"last_seen_at": NOW, "stopped_at": NOW}, id="stopped"),
    ],
)
def test_degraded_when_no_scheduler_is_alive(frozen, api, staff, heartbeat_factory, beat):
    if beat is not None:
        heartbeat_factory(**beat)

    response = api.as_user(staff).get(HEALTH)

    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["schedulers"] == {
        "status": "degraded",
        "live": 0,
        "workers": [],
        "message": "no scheduler process is alive",
    }


def test_anonymous_and_non_staff_get_the_status_alone(frozen, api, user, heartbeat_factory):
    heartbeat_factory()
    assert api.get(HEALTH).json() == {"status": "healthy"}
    assert api.as_user(user).get(HEALTH).json() == {"status": "healthy"}


def test_degraded_by_due_work_without_ready_service_old_wait_and_emergency(
    frozen, api, staff, heartbeat_factory, subtask, task_wait_metric_factory, alert_factory
):
    heartbeat_factory()
    task_wait_metric_factory(task=subtask.task, queue_entry_time=frozen - dt.timedelta(seconds=601))
    alert_factory(severity="emergency")

    checks = api.as_user(staff).get(HEALTH).json()["checks"]

    assert checks["ready_services"] == {
        "status": "degraded",
        "ready": 0,
        "message": "work is due but no service is ready",
    }
    assert checks["backlog"] == {"status": "ok", "pending": 1, "due": 1}
    assert checks["oldest_waiting_task"] == {
        "status": "degraded",
        "task_id": str(subtask.task_id),
        "wait_seconds": 601,
        "critical_seconds": 600.0,
    }
    assert checks["open_alerts"] == {
        "status": "degraded",
        "info": 0,
        "warning": 0,
        "critical": 0,
        "emergency": 1,
        "unacknowledged_emergency": 1,
    }


def test_an_acknowledged_emergency_is_counted_but_no_longer_degrades_health(
    frozen, api, staff, heartbeat_factory, alert_factory
):
    heartbeat_factory()
    emergency = alert_factory(severity="emergency")
    client = api.as_user(staff)
    assert client.get(HEALTH).json()["status"] == "degraded"

    assert client.post(f"{ALERTS}{emergency.pk}/acknowledge/").status_code == 200

    body = client.get(HEALTH).json()
    assert body["status"] == "healthy"
    assert body["checks"]["open_alerts"] == {
        "status": "ok",
        "info": 0,
        "warning": 0,
        "critical": 0,
        "emergency": 1,
        "unacknowledged_emergency": 0,
    }


def test_database_down_is_unhealthy_503(api, monkeypatch, db):
    def down():
        raise OperationalError("connection refused")

    monkeypatch.setattr(health, "ping_database", down)

    response = api.get(HEALTH)

    assert (response.status_code, response.json()) == (503, {"status": "unhealthy"})


def test_health_checks_report_without_a_request_when_the_database_is_down(monkeypatch, db):
    monkeypatch.setattr(health, "ping_database", lambda: (_ for _ in ()).throw(OperationalError("down")))
    result = health.system_health()
    assert result["status"] == "unhealthy"
    assert result["checks"]["database"] == {"status": "unhealthy", "message": "database unavailable"}
    assert result["checks"]["schedulers"] == {"status": "skipped", "message": "database unavailable"}


def test_a_dead_database_behind_the_pool_is_reported_without_waiting_the_pool_timeout(tmp_path):
    """A load balancer's probe gets its 503 in seconds, not after DB_POOL_TIMEOUT."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL")}
    env |= {
        "DJANGO_SETTINGS_MODULE": "edm.settings",
        "DEBUG": "1",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{port}/edm",
        "DB_POOL": "1",
        "DB_POOL_TIMEOUT": "600",
    }
    script = (
        "import json, django; django.setup(); "
        "from monitoring.services.health import system_health; "
        "print(json.dumps(system_health()['checks']['database']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    database_check = json.loads(done.stdout.strip().splitlines()[-1])
    assert database_check == {"status": "unhealthy", "message": "database unavailable"}


# --- performance metrics ---------------------------------------------------------------


def test_performance_metrics_default_to_the_last_hour_by_minute(frozen, api, staff, send_attempt_factory):
    send_attempt_factory(started_at=frozen - dt.timedelta(minutes=30, seconds=10))
    send_attempt_factory(started_at=frozen - dt.timedelta(minutes=30, seconds=5), outcome="permanent")
    send_attempt_factory(started_at=frozen - dt.timedelta(minutes=90))  # outside the hour

    body = api.as_user(staff).get(PERF).json()

    assert (body["bucket"], len(body["data"])) == ("minute", 60)
    assert [p for p in body["data"] if p["sent"] or p["failed"]] == [
        {
            "time": "2026-03-02T11:29:00+00:00",
            "sent": 1,
            "failed": 1,
            "success_rate": 50.0,
            "wait_p50": None,
            "wait_p95": None,
        }
    ]


def test_performance_metrics_by_hour_with_waits(frozen, api, staff, send_attempt_factory, task_wait_metric_factory):
    for minutes in (10, 20, 70):
        send_attempt_factory(started_at=frozen - dt.timedelta(minutes=minutes))
    task_wait_metric_factory(
        first_send_time=frozen - dt.timedelta(minutes=5), wait_duration_seconds=40, status="processing"
    )

    response = api.as_user(staff).get(PERF, {"since": "2026-03-02T10:00:00Z", "bucket": "hour"})

    assert response.status_code == 200
    assert [(p["time"], p["sent"], p["wait_p50"]) for p in response.json()["data"]] == [
        ("2026-03-02T10:00:00+00:00", 1, None),
        ("2026-03-02T11:00:00+00:00", 2, 40.0),
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"since": "yesterday"}, "since", id="bad-since"),
        pytest.param({"bucket": "week"}, "bucket", id="bad-bucket"),
        pytest.param({"since": "2026-03-02T13:00:00Z"}, "since", id="since-after-until"),
        pytest.param({"since": "2026-01-01T00:00:00Z"}, "detail", id="too-many-buckets"),
    ],
)
def test_performance_metrics_bad_params_are_400(frozen, api, staff, params, field):
    response = api.as_user(staff).get(PERF, params)
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert response.json()["detail"]


def test_performance_metrics_are_staff_only(api, user):
    assert api.get(PERF).status_code in (401, 403)
    assert api.as_user(user).get(PERF).status_code == 403


# --- alerts -------------------------------------------------------------------------------


def test_alerts_list_filters_and_pages(api, staff, alert_factory):
    alert_factory(severity="critical")
    alert_factory(severity="warning")
    alert_factory(severity="critical", status="resolved")

    client = api.as_user(staff)
    body = client.get(ALERTS, {"severity": "critical", "status": "open"}).json()

    assert body["count"] == 1
    assert body["results"][0]["severity"] == "critical"
    assert client.get(ALERTS, {"page_size": 2}).json()["next"] is not None


def test_acknowledge_then_resolve(api, staff, alert_factory):
    alert = alert_factory()
    client = api.as_user(staff)

    acked = client.post(f"{ALERTS}{alert.pk}/acknowledge/")
    assert acked.status_code == 200
    assert (acked.json()["status"], acked.json()["acknowledged_by"]) == ("acknowledged", "operator")
    again = client.post(f"{ALERTS}{alert.pk}/acknowledge/")
    assert again.status_code == 409
    assert again.json() == {"detail": "only an open alert can be acknowledged; this one is acknowledged"}

    resolved = client.post(f"{ALERTS}{alert.pk}/resolve/")
    assert (resolved.status_code, resolved.json()["status"]) == (200, "resolved")
    assert client.post(f"{ALERTS}{alert.pk}/resolve/").status_code == 409
    assert Alert.objects.get().resolved_at is not None


def test_alerts_are_staff_only(api, user, alert_factory):
    alert = alert_factory()
    client = api.as_user(user)
    assert client.get(ALERTS).status_code == 403
    assert client.get(f"{ALERTS}{alert.pk}/").status_code == 403
    assert client.post(f"{ALERTS}{alert.pk}/acknowledge/").status_code == 403
    assert client.post(f"{ALERTS}{alert.pk}/resolve/").status_code == 403
    assert Alert.objects.get().status == "open"


# --- task wait metrics ----------------------------------------------------------------


def test_users_see_only_their_own_wait_metrics_and_staff_see_all(api, staff, user_factory, task_wait_metric_factory):
    alice, bob = user_factory(username="alice"), user_factory(username="bob")
    mine = task_wait_metric_factory(task__owner=alice)
    theirs = task_wait_metric_factory(task__owner=bob, status="processing")

    client = api.as_user(alice)
    assert [m["id"] for m in client.get(WAITS).json()["results"]] == [str(mine.pk)]
    assert client.get(f"{WAITS}{theirs.pk}/").status_code == 404
    assert client.get(f"{WAITS}{mine.pk}/").json()["task"] == str(mine.task_id)

    staff_client = api.as_user(staff)
    assert staff_client.get(WAITS).json()["count"] == 2
    assert [m["id"] for m in staff_client.get(WAITS, {"status": "processing"}).json()["results"]] == [str(theirs.pk)]
    assert [m["id"] for m in staff_client.get(WAITS, {"task": str(mine.task_id)}).json()["results"]] == [str(mine.pk)]


def test_wait_metrics_need_authentication(api, db):
    assert api.get(WAITS).status_code in (401, 403)


def test_the_schema_documents_the_monitoring_endpoints(api, db):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    paths = set(schema["paths"])
    assert {
        "/api/monitoring/system-health",
        "/api/monitoring/performance-metrics",
        "/api/monitoring/alerts/",
        "/api/monitoring/alerts/{id}/acknowledge/",
        "/api/monitoring/alerts/{id}/resolve/",
        "/api/monitoring/task-wait-metrics/",
    } <= paths


# --- services and queue ---------------------------------------------------------------------


def test_service_usage_endpoint(frozen, api, staff, email_service_factory):
    email_service_factory(name="relay-a", is_enabled=False, total_sent=5)

    body = api.as_user(staff).get("/api/monitoring/services").json()

    assert [(s["name"], s["ready"], s["not_ready_reason"], s["sent"]) for s in body["data"]] == [
        ("relay-a", False, "disabled", 5)
    ]


def test_queue_endpoint_gives_the_state_and_the_samples(
    frozen, api, staff, subtask, heartbeat_factory, task_wait_metric_factory
):
    heartbeat_factory(worker_id="w1")
    task_wait_metric_factory(task=subtask.task, queue_entry_time=frozen - dt.timedelta(seconds=90))
    QueueSampleFactory(taken_at=frozen - dt.timedelta(minutes=2), pending=4, ready_services=1)
    QueueSampleFactory(taken_at=frozen - dt.timedelta(hours=2), pending=9)

    body = api.as_user(staff).get("/api/monitoring/queue").json()

    assert body["depth"] == {"pending": 1, "allocated": 0, "processing": 0, "parked": 0}
    assert body["backlog"] == {"pending": 1, "due": 1}
    assert (body["ready_services"], body["live_schedulers"]) == (0, ["w1"])
    assert body["oldest_waiting_task"]["wait_seconds"] == 90
    assert body["series"] == [
        {"time": "2026-03-02T11:58:00+00:00", "pending": 4, "in_flight": 0, "ready_services": 1, "live_schedulers": 0}
    ]


@pytest.mark.parametrize("path", ["/api/monitoring/services", "/api/monitoring/queue"])
def test_services_and_queue_are_staff_only(api, user, path):
    assert api.as_user(user).get(path).status_code == 403


def test_queue_since_must_be_a_datetime_and_a_future_one_has_no_samples(frozen, api, staff):
    client = api.as_user(staff)
    assert client.get("/api/monitoring/queue", {"since": "soon"}).status_code == 400
    empty = client.get("/api/monitoring/queue", {"since": ""})
    assert (empty.status_code, empty.json()["errors"]) == (400, {"since": [EMPTY]})
    future = client.get("/api/monitoring/queue", {"since": "2026-03-03T00:00:00Z"})
    assert (future.status_code, future.json()["series"]) == (200, [])


def test_a_stalled_scheduler_degrades_health(frozen, api, staff, heartbeat_factory, settings):
    settings.CELERY_BROKER_URL = None
    heartbeat_factory(worker_id="w1", last_seen_at=frozen - dt.timedelta(seconds=3))
    stuck_since = frozen - dt.timedelta(seconds=40)
    heartbeat_factory(
        worker_id="w2",
        last_seen_at=stuck_since,
        reported_at=frozen - dt.timedelta(seconds=1),
        stalled_since=stuck_since,
        stalled_reason="recorder",
    )
    # Stalled once, then killed: no longer reporting, so only not live.
    heartbeat_factory(worker_id="w3", last_seen_at=stuck_since, reported_at=stuck_since, stalled_since=stuck_since)

    body = api.as_user(staff).get(HEALTH).json()

    assert body["status"] == "degraded"
    assert body["checks"]["schedulers"] == {
        "status": "degraded",
        "live": 1,
        "workers": ["w1"],
        "stalled": 1,
        "stalled_workers": ["w2"],
        "message": "scheduler w2: recorder stuck",
    }
