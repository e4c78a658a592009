"""manage.py validate_deployment: its checks one by one, its arguments, and a run against a live stack.

The stack tests (PostgreSQL) start what a deployment runs: gunicorn serving
edm.wsgi, two ``run_scheduler --maintenance on`` processes and an SMTP server,
then run the command as an operator would, as a subprocess.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token

from deliverability.suppressions import suppression_add
from monitoring.models import QueueSample
from monitoring.services.system import SystemMonitorService
from monitoring.services.validation import (
    FAIL,
    PASS,
    VALIDATOR_USERNAME,
    Endpoint,
    check_end_to_end,
    check_health,
    check_monitoring,
    health_result,
    metrics_verdict,
    probe_create,
    probe_wait,
    throughput_result,
)
from queues.models import SubTask, Task
from tests.processes import child_environment
from tests.schedulers import ROOT, wait_until
from tests.web import gunicorn

pytestmark = pytest.mark.django_db(transaction=True)

RECIPIENT = "validation-probe@deploy.example"
UNREACHABLE = Endpoint("http://127.0.0.1:9")  # the discard port: nothing listens there

HEALTHY_CHECKS = {
    "database": {"status": "ok", "vendor": "postgresql"},
    "broker": {"status": "skipped", "message": "no Celery broker configured"},
    "schedulers": {"status": "ok", "live": 2, "workers": ["a", "b"]},
    "ready_services": {"status": "ok", "ready": 1},
    "backlog": {"status": "ok", "pending": 0, "due": 0},
}
DEGRADED_CHECKS = HEALTHY_CHECKS | {
    "schedulers": {"status": "degraded", "live": 0, "workers": [], "message": "no scheduler process is alive"},
    "open_alerts": {"status": "degraded", "info": 0, "warning": 0, "critical": 0, "emergency": 1},
}
DEGRADED_CHECKS_LINES = (
    "schedulers: degraded - no scheduler process is alive (live=0, workers=[])",
    "open_alerts: degraded (info=0, warning=0, critical=0, emergency=1)",
)
HEALTH_PATH = "/api/monitoring/system-health"

METRICS_UP = """\
# TYPE edm_queue_subtasks gauge
edm_queue_subtasks{status="pending"} 3.0
edm_queue_subtasks{status="allocated"} 0.0
# TYPE edm_queue_due_subtasks gauge
edm_queue_due_subtasks 3.0
# TYPE edm_ready_services gauge
edm_ready_services 1.0
# TYPE edm_live_schedulers gauge
edm_live_schedulers 2.0
# TYPE edm_oldest_waiting_task_seconds gauge
edm_oldest_waiting_task_seconds 0.0
# TYPE edm_open_alerts gauge
edm_open_alerts{severity="critical"} 0.0
# TYPE edm_queue_metrics_up gauge
edm_queue_metrics_up 1.0
"""


def run_command(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {**child_environment(), **(env or {})}
    for name in ("EDM_VALIDATE_RECIPIENT", "EDM_VALIDATE_TOKEN"):
        if env is None or name not in env:
            environment.pop(name, None)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "validate_deployment", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def verdicts(stdout: str) -> list[str]:
    """'PASS health', 'FAIL end-to-end', ... in the order printed."""
    return [line.split(":")[0] for line in stdout.splitlines() if line.startswith(("PASS ", "FAIL ", "SKIP "))]


# --- the checks, in this process (both databases) ------------------------------


def test_healthy_passes_with_its_figures():
    result = health_result(200, "healthy", HEALTHY_CHECKS)
    assert (result.status, result.summary, result.details) == (
        PASS,
        "healthy (HTTP 200, live schedulers 2, ready services 1, due subtasks 0)",
        (),
    )


@pytest.mark.parametrize(
    ("allow_degraded", "status", "summary_end"),
    [
        pytest.param(False, FAIL, "due subtasks 0)", id="degraded-fails"),
        pytest.param(True, PASS, "due subtasks 0), allowed by --allow-degraded", id="degraded-allowed"),
    ],
)
def test_degraded_lists_the_failing_checks(allow_degraded, status, summary_end):
    result = health_result(200, "degraded", DEGRADED_CHECKS, allow_degraded=allow_degraded)
    assert result.status == status
    assert result.summary.startswith("degraded (HTTP 200, live schedulers 0")
    assert result.summary.endswith(summary_end)
    assert result.details == DEGRADED_CHECKS_LINES


def test_unhealthy_fails_even_when_degraded_is_allowed():
    result = health_result(
        503, "unhealthy", {"database": {"status": "unhealthy", "message": "database unavailable"}}, allow_degraded=True
    )
    assert (result.status, result.summary, result.details) == (
        FAIL,
        "unhealthy (HTTP 503)",
        ("database: unhealthy - database unavailable",),
    )


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        pytest.param(METRICS_UP, (True, "/metrics edm_queue_metrics_up 1 (7 edm_ families, 3 pending)"), id="up"),
        pytest.param(
            "# TYPE edm_queue_metrics_up gauge\nedm_queue_metrics_up 0.0\n",
            (False, "/metrics edm_queue_metrics_up 0 (the web process cannot read the queue)"),
            id="database-down",
        ),
        pytest.param(
            "# TYPE python_info gauge\npython_info 1.0\n",
            (False, "/metrics edm_queue_metrics_up missing (the web process cannot read the queue)"),
            id="no-queue-collector",
        ),
        pytest.param(
            METRICS_UP.replace("edm_ready_services", "edm_other"),
            (False, "/metrics lacks edm_ready_services"),
            id="family-missing",
        ),
    ],
)
def test_metrics_verdict(text, verdict):
    assert metrics_verdict(text) == verdict


@pytest.mark.parametrize(
    ("age", "sample_line"),
    [
        pytest.param(30, "ok: last queue sample 30 s ago (limit 180 s)", id="recent"),
        pytest.param(
            400, "last queue sample 400 s ago (limit 180 s): the sample_queue sweep is not running", id="stale"
        ),
    ],
)
def test_monitoring_judges_the_latest_queue_sample(age, sample_line):
    now = timezone.now()
    QueueSample.objects.create(
        taken_at=now - dt.timedelta(seconds=age),
        pending=0,
        in_flight=0,
        ready_services=1,
        live_schedulers=1,
        sent_total=0,
        failed_total=0,
    )
    result = check_monitoring(UNREACHABLE, max_sample_age=180, now=now)
    assert result.status == FAIL
    assert "cannot reach http://127.0.0.1:9/metrics (ConnectionError)" in result.summary
    assert "no live scheduler heartbeat" in result.summary
    assert sample_line in [*result.summary.split("; "), *result.details]


class CannedHandler(BaseHTTPRequestHandler):
    """Answers each path with the (status, JSON body) set on the server; records the Authorization headers."""

    def do_GET(self) -> None:
        status, body = self.server.answers[self.path]
        self.server.authorizations.append(self.headers.get("Authorization"))
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def canned_web():
    server = ThreadingHTTPServer(("127.0.0.1", 0), CannedHandler)
    server.answers, server.authorizations = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_health_over_http_sends_the_token_and_lists_the_web_process_checks(canned_web):
    canned_web.answers[HEALTH_PATH] = (200, {"status": "degraded", "checks": DEGRADED_CHECKS})
    endpoint = Endpoint(f"http://127.0.0.1:{canned_web.server_port}", token="tok-123")

    result = check_health(endpoint)

    assert result.status == FAIL
    assert result.details == DEGRADED_CHECKS_LINES
    assert canned_web.authorizations == ["Token tok-123"]


def test_health_without_a_staff_token_computes_the_reasons_here(canned_web, db):
    canned_web.answers[HEALTH_PATH] = (200, {"status": "degraded"})

    result = check_health(Endpoint(f"http://127.0.0.1:{canned_web.server_port}"))

    assert result.status == FAIL
    assert result.summary.startswith("degraded (HTTP 200, live schedulers 0, ready services 0, due subtasks 0")
    assert result.details == (
        "schedulers: degraded - no scheduler process is alive (live=0, workers=[])",
        "checks computed by this command: give a staff --token for the web process's own",
    )
    assert canned_web.authorizations == [None]


def test_a_refused_token_fails_health(canned_web):
    canned_web.answers[HEALTH_PATH] = (401, {"detail": "Invalid token."})

    result = check_health(Endpoint(f"http://127.0.0.1:{canned_web.server_port}", token="stale"))

    assert (result.status, result.summary) == (FAIL, f"{HEALTH_PATH} refused the token (HTTP 401)")


def test_endpoint_never_shows_credentials():
    assert Endpoint("https://ops:s3cret@edm.example:8443/").display == "https://edm.example:8443/"


def test_end_to_end_without_a_scheduler_times_out_and_cancels_its_probe(email_service):
    started = time.monotonic()

    result = check_end_to_end(recipient=RECIPIENT, timeout=0.5)

    assert time.monotonic() - started < 5
    assert result.status == FAIL
    assert result.summary == f"mail to {RECIPIENT} not sent within 0.5 s: subtask pending"
    assert result.details[1:] == (
        "last attempt: none (no scheduler claimed it)",
        "live schedulers: 0",
        "ready services: 1",
        "1 unfinished validation task(s) cancelled (kept as history)",
    )
    task = Task.objects.get()
    assert (task.owner.username, task.owner.has_usable_password(), task.status) == (
        VALIDATOR_USERNAME,
        False,
        Task.Status.CANCELLED,
    )
    assert task.name.startswith("deployment validation end-to-end ")
    assert list(SubTask.objects.values_list("recipient_email", "status")) == [(RECIPIENT, "cancelled")]


def test_end_to_end_reports_the_servers_refusal(smtp_sink, email_service_factory):
    email_service_factory(name="relay-1", port=smtp_sink.port, sending_rate=0)
    task = probe_create(recipient="permfail@deploy.example", label="end-to-end")
    call_command("run_scheduler", "--until-empty", "--worker-id", "validation-test")

    result = probe_wait(task, timeout=1)

    assert (result.status, result.summary) == (FAIL, "mail to permfail@deploy.example failed after 1 attempt(s)")
    assert result.details[1].startswith("last attempt: permanent via relay-1 at ")
    assert result.details[1].endswith(": SMTP 550 5.1.1 No such user here")
    assert smtp_sink.count() == 0


def test_end_to_end_says_when_the_probe_address_is_suppressed(smtp_sink, email_service_factory):
    email_service_factory(name="relay-1", port=smtp_sink.port, sending_rate=0)
    suppression_add(owner_id=None, email=RECIPIENT, reason="complaint", source="test")
    task = probe_create(recipient=RECIPIENT, label="end-to-end")
    call_command("run_scheduler", "--until-empty", "--worker-id", "validation-test")

    result = probe_wait(task, timeout=1)

    assert (result.status, result.summary) == (
        FAIL,
        f"mail to {RECIPIENT} not sent: the address is suppressed (suppressed: complaint (platform-wide list))",
    )
    assert smtp_sink.count() == 0


def test_end_to_end_passes_with_the_first_send_time(smtp_sink, email_service_factory):
    email_service_factory(name="relay-1", port=smtp_sink.port, sending_rate=0)
    task = probe_create(recipient=RECIPIENT, label="end-to-end")
    call_command("run_scheduler", "--until-empty", "--worker-id", "validation-test")

    result = probe_wait(task, timeout=1)

    assert result.status == PASS
    assert result.summary.startswith(f"mail to {RECIPIENT} sent via relay-1, SMTP 250; first send ")
    assert [r.recipient for r in smtp_sink.snapshot()] == [RECIPIENT]


def test_throughput_at_or_above_the_floor_passes(db):
    result = throughput_result([], {"completed": 20}, count=20, elapsed=2.0, created_in=0.5, timeout=60, min_rate=5)
    assert (result.status, result.summary, result.details) == (
        PASS,
        "20/20 tasks completed in 2.00 s = 10.0 tasks/s (floor 5; created in 0.50 s)",
        (),
    )


@pytest.mark.parametrize(
    ("rates", "ceiling"),
    [
        pytest.param([0.5, 1.0], "2 enabled service(s) allow at most 3.0 mails/s by their sending rates", id="rated"),
        pytest.param([None], "1 enabled service(s) allow at most 1.0 mails/s by their sending rates", id="default"),
        pytest.param([2.0, 0.0], "2 enabled service(s), at least one without a sending rate limit", id="unlimited"),
    ],
)
def test_throughput_below_the_floor_fails_with_what_the_rates_allow(email_service_factory, rates, ceiling):
    for rate in rates:
        email_service_factory(sending_rate=rate)
    email_service_factory(sending_rate=0.01, is_enabled=False)

    result = throughput_result([], {"completed": 20}, count=20, elapsed=8.0, created_in=0.5, timeout=60, min_rate=5)

    assert (result.status, result.summary, result.details) == (
        FAIL,
        "20/20 tasks completed in 8.00 s = 2.5 tasks/s (floor 5; created in 0.50 s)",
        (ceiling,),
    )


def test_throughput_tasks_left_unfinished_are_cancelled(email_service):
    tasks = [probe_create(recipient=RECIPIENT, label=f"throughput {i}/2") for i in (1, 2)]

    result = throughput_result(tasks, {"pending": 2}, count=2, elapsed=3.0, created_in=0.1, timeout=3, min_rate=5)

    assert (result.status, result.summary, result.details) == (
        FAIL,
        "0/2 tasks completed in 3.00 s = 0.0 tasks/s (floor 5; created in 0.10 s)",
        ("not all finished within 3 s", "pending: 2", "2 unfinished validation task(s) cancelled (kept as history)"),
    )
    assert Counter(Task.objects.values_list("status", flat=True)) == {"cancelled": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--timeout", "0"], "argument --timeout: invalid positive_float value: '0'", id="timeout"),
        pytest.param(["--base-url", "ftp://edm"], "argument --base-url: invalid http_url value: 'ftp://edm'", id="url"),
        pytest.param(
            ["--throughput-tasks", "5000"], "argument --throughput-tasks: invalid task_count value: '5000'", id="tasks"
        ),
        pytest.param(
            [],
            "CommandError: no test recipient: give --recipient or set EDM_VALIDATE_RECIPIENT "
            "(or skip end-to-end and throughput)",
            id="no-recipient",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_readable_line(args, message):
    result = run_command(*args, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(message)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not Task.objects.exists()


def test_skipped_checks_need_no_recipient_and_an_unreachable_web_process_fails():
    result = run_command("--base-url", UNREACHABLE.base_url, "--skip", "end-to-end", "--skip", "throughput")

    assert result.returncode == 1
    assert verdicts(result.stdout) == ["FAIL health", "SKIP end-to-end", "FAIL monitoring", "SKIP throughput"]
    lines = result.stdout.splitlines()
    assert lines[0] == "validating http://127.0.0.1:9"
    assert lines[1] == "FAIL health: cannot reach http://127.0.0.1:9/api/monitoring/system-health (ConnectionError)"
    assert "SKIP end-to-end: skipped (--skip)" in lines
    assert not Task.objects.exists()


# --- against a running stack (PostgreSQL) ---------------------------------------


@pytest.fixture(scope="module")
def web(django_db_setup, django_db_blocker, tmp_path_factory):
    """gunicorn serving edm.wsgi on the test database; its base URL."""
    log_path = tmp_path_factory.mktemp("web") / "gunicorn.log"
    with django_db_blocker.unblock(), gunicorn(log_path) as (base_url, _):
        yield base_url


@pytest.fixture
def service(smtp_sink, email_service_factory):
    return email_service_factory(name="relay-1", port=smtp_sink.port, sending_rate=0, daily_quota=10_000)


@pytest.fixture
def staff_token(user_factory):
    return Token.objects.create(user=user_factory(username="ops", is_staff=True)).key


@pytest.mark.postgres_only
def test_every_check_passes_against_a_running_stack(web, service, smtp_sink, schedulers, staff_token):
    schedulers.start(2, "--maintenance", "on")
    wait_until(
        lambda: len(SystemMonitorService.live_schedulers()) == 2 and QueueSample.objects.exists(),
        timeout=30,
        what="two live schedulers and their first queue sample",
    )

    result = run_command(
        "--base-url",
        web,
        "--recipient",
        RECIPIENT,
        "--timeout",
        "30",
        "--throughput-tasks",
        "20",
        "--max-sample-age",
        "60",
        env={"EDM_VALIDATE_TOKEN": staff_token},
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output + schedulers.logs()
    assert verdicts(result.stdout) == ["PASS health", "PASS end-to-end", "PASS monitoring", "PASS throughput"]
    assert result.stdout.splitlines()[-1] == "deployment validated: 4 check(s) passed"
    assert "live schedulers 2" in result.stdout
    assert "2 live scheduler(s) (test-worker-0, test-worker-1)" in result.stdout
    assert staff_token not in output
    records = smtp_sink.snapshot()
    assert Counter(r.recipient for r in records) == {RECIPIENT: 21}
    tasks = Task.objects.filter(owner__username=VALIDATOR_USERNAME)
    assert Counter(tasks.values_list("status", flat=True)) == {"completed": 21}
    assert all(name.startswith("deployment validation ") for name in tasks.values_list("name", flat=True))


@pytest.mark.postgres_only
def test_without_a_scheduler_health_and_end_to_end_fail(web, service, smtp_sink):
    started = time.monotonic()

    result = run_command("--base-url", web, "--recipient", RECIPIENT, "--timeout", "2")

    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stdout + result.stderr
    assert verdicts(result.stdout) == ["FAIL health", "FAIL end-to-end", "FAIL monitoring", "SKIP throughput"]
    lines = result.stdout.splitlines()
    assert "FAIL health: degraded (HTTP 200, live schedulers 0, ready services 1, due subtasks 0)" in lines
    assert "     schedulers: degraded - no scheduler process is alive (live=0, workers=[])" in lines
    assert f"FAIL end-to-end: mail to {RECIPIENT} not sent within 2 s: subtask pending" in lines
    assert "     last attempt: none (no scheduler claimed it)" in lines
    assert result.stderr.strip().splitlines()[-1] == (
        "CommandError: deployment validation failed: health, end-to-end, monitoring"
    )
    assert smtp_sink.count() == 0
    assert list(SubTask.objects.values_list("recipient_email", "status")) == [(RECIPIENT, "cancelled")]
