"""Production validation (the plan's ProductionValidator): is this deployment ready for traffic?

Four checks, in the plan's order, each returning a ``CheckResult``:

- ``health``: the web process's ``/api/monitoring/system-health`` says healthy;
- ``end-to-end``: one real mail, queued with ``task_create``, is sent by the
  running schedulers (this code never sends anything itself);
- ``monitoring``: ``/metrics`` (read with this process's ``EDM_METRICS_*``
  credentials, as Prometheus reads it) serves the queue's ``edm_`` figures, the
  ``sample_queue`` sweep wrote a recent sample, a scheduler heartbeat is live;
- ``throughput``: N one-recipient tasks are completed at no less than the
  plan's floor of 5 tasks/s.

The probes are queued with ``task_create``, the function behind ``POST /api/tasks/``,
rather than over HTTP: the command runs where the database is anyway, so the
validation user needs no password or token, and the web tier is already
exercised by the health and metrics checks. What is validated end to end is
the part that matters: the running schedulers claim, send and record the mail.

Validation mail goes only to the one recipient the operator names. Its tasks
belong to a dedicated, login-less user and are named "deployment validation …",
so they are easy to find and are kept as history; a probe that did not go
out in time is cancelled (not deleted), so it is not sent later, unexpectedly.
Nothing printed here carries the token or credentials of the base URL.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests
from django.db.models import Count
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import User
from common.metrics_auth import MetricsCredentials
from config.services import get_config_by_category
from monitoring.models import QueueSample
from monitoring.services.health import DEGRADED, HEALTHY, OK, SKIPPED, system_health
from monitoring.services.system import SystemMonitorService
from queues.models import EmailService, SendAttempt, SubTask, Task, TaskWaitMetric
from queues.services import TaskStateError, task_cancel, task_create

CHECKS = ("health", "end-to-end", "monitoring", "throughput")
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
VALIDATOR_USERNAME = "deployment-validator"
NAME_PREFIX = "deployment validation"
HTTP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.1
# The QueueCollector families (monitoring/metrics.py) that are there whenever
# the database answers; the per-service counters need a service to exist.
QUEUE_METRICS = (
    "edm_queue_subtasks",
    "edm_queue_due_subtasks",
    "edm_ready_services",
    "edm_live_schedulers",
    "edm_oldest_waiting_task_seconds",
    "edm_open_alerts",
    "edm_queue_metrics_up",
)
FINISHED_TASKS = (Task.Status.COMPLETED, Task.Status.FAILED, Task.Status.CANCELLED)


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # PASS, FAIL or SKIP
    summary: str
    details: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def lines(self) -> list[str]:
        return [f"{self.status} {self.name}: {self.summary}", *(f"     {line}" for line in self.details)]


@dataclass(frozen=True)
class Endpoint:
    """The web process under test: a base URL and, optionally, a staff token."""

    base_url: str
    token: str | None = None

    @property
    def display(self) -> str:
        """The base URL without user:password@, fit to print."""
        parts = urllib.parse.urlsplit(self.base_url)
        return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def get(self, path: str, *, headers: dict[str, str] | None = None) -> requests.Response:
        """GET with the staff token, or with ``headers`` instead (the metrics credentials)."""
        if headers is None:
            headers = {"Authorization": f"Token {self.token}"} if self.token else {}
        return requests.get(self.url(path), headers=headers, timeout=HTTP_TIMEOUT_SECONDS)


# --- health -------------------------------------------------------------------


def check_health(endpoint: Endpoint, *, allow_degraded: bool = False) -> CheckResult:
    """GET /api/monitoring/system-health: PASS when healthy (or degraded with ``allow_degraded``)."""
    path = "/api/monitoring/system-health"
    try:
        response = endpoint.get(path)
        body = response.json()
    except requests.RequestException as exc:
        return CheckResult("health", FAIL, f"cannot reach {endpoint.display}{path} ({type(exc).__name__})")
    except ValueError:
        return CheckResult("health", FAIL, f"{path} answered HTTP {response.status_code} without JSON")
    if response.status_code in (401, 403):
        return CheckResult("health", FAIL, f"{path} refused the token (HTTP {response.status_code})")
    checks, note = body.get("checks"), ()
    if checks is None and body.get("status") != HEALTHY:
        # Anonymous (or non-staff) callers get the status only; the command
        # has the database too, so it can say why.
        checks = system_health()["checks"]
        note = ("checks computed by this command: give a staff --token for the web process's own",)
    return health_result(response.status_code, body.get("status"), checks, allow_degraded=allow_degraded, note=note)


def health_result(
    status_code: int,
    status: str | None,
    checks: dict[str, dict[str, Any]] | None,
    *,
    allow_degraded: bool = False,
    note: tuple[str, ...] = (),
) -> CheckResult:
    """Judge a system-health answer; the failing checks become the details."""
    failing = tuple(
        _describe_check(name, check)
        for name, check in (checks or {}).items()
        if check.get("status") not in (OK, SKIPPED)
    )
    figures = _health_figures(checks or {})
    summary = f"{status} (HTTP {status_code}{figures})"
    if status == HEALTHY and status_code == 200:
        return CheckResult("health", PASS, summary)
    if status == DEGRADED and status_code == 200 and allow_degraded:
        return CheckResult("health", PASS, f"{summary}, allowed by --allow-degraded", failing + note)
    return CheckResult("health", FAIL, summary, failing + note)


def _health_figures(checks: dict[str, dict[str, Any]]) -> str:
    figures = []
    if "schedulers" in checks and "live" in checks["schedulers"]:
        figures.append(f"live schedulers {checks['schedulers']['live']}")
    if "ready_services" in checks and "ready" in checks["ready_services"]:
        figures.append(f"ready services {checks['ready_services']['ready']}")
    if "backlog" in checks and "due" in checks["backlog"]:
        figures.append(f"due subtasks {checks['backlog']['due']}")
    return "".join(f", {figure}" for figure in figures)


def _describe_check(name: str, check: dict[str, Any]) -> str:
    figures = ", ".join(f"{key}={value}" for key, value in check.items() if key not in ("status", "message"))
    message = check.get("message")
    return (
        f"{name}: {check.get('status')}" + (f" - {message}" if message else "") + (f" ({figures})" if figures else "")
    )


# --- end to end ---------------------------------------------------------------


def validator_user() -> User:
    """The login-less user that owns every validation task (created on first use)."""
    user, created = User.objects.get_or_create(
        username=VALIDATOR_USERNAME,
        defaults={"first_name": "Deployment", "last_name": "validation"},
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def probe_create(*, recipient: str, label: str, owner: User | None = None) -> Task:
    """Queue one validation mail to ``recipient`` (and to no one else)."""
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S UTC")
    return task_create(
        owner=owner or validator_user(),
        name=f"{NAME_PREFIX} {label} {stamp}",
        subject=f"EDM deployment validation ({label}, {stamp})",
        body_text=(
            "This message was sent by manage.py validate_deployment to check that the sending queue "
            f"delivers mail end to end. Check: {label}. Queued at {stamp}. No action is needed."
        ),
        recipients=[recipient],
    )


def check_end_to_end(*, recipient: str, timeout: float) -> CheckResult:
    """Queue one mail to ``recipient`` and wait until the running schedulers have sent it."""
    return probe_wait(probe_create(recipient=recipient, label="end-to-end"), timeout=timeout)


def probe_wait(task: Task, *, timeout: float) -> CheckResult:
    """Poll the probe's subtask until it is sent, fails, or ``timeout`` seconds pass."""
    started = time.monotonic()
    deadline = started + timeout
    subtask = SubTask.objects.get(task=task)
    while subtask.status not in SubTask.TERMINAL and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        subtask.refresh_from_db()
    waited = time.monotonic() - started
    last = SendAttempt.objects.filter(subtask=subtask).select_related("service").order_by("-started_at").first()
    if subtask.status == SubTask.Status.SENT:
        return CheckResult("end-to-end", PASS, _sent_summary(task, subtask, last, waited))
    details = [f"task {task.pk} ({task.name}), subtask {subtask.pk}", f"last attempt: {_describe_attempt(last)}"]
    if subtask.status == SubTask.Status.FAILED:
        summary = f"mail to {subtask.recipient_email} failed after {subtask.attempts} attempt(s)"
        return CheckResult("end-to-end", FAIL, summary, tuple(details))
    if subtask.status == SubTask.Status.SUPPRESSED:
        summary = f"mail to {subtask.recipient_email} not sent: the address is suppressed ({subtask.error_message})"
        return CheckResult("end-to-end", FAIL, summary, tuple(details))
    summary = f"mail to {subtask.recipient_email} not sent within {timeout:g} s: subtask {subtask.status}"
    details.append(f"live schedulers: {len(SystemMonitorService.live_schedulers())}")
    details.append(f"ready services: {SystemMonitorService.ready_services()}")
    details.append(_give_up([task]))
    return CheckResult("end-to-end", FAIL, summary, tuple(details))


def _sent_summary(task: Task, subtask: SubTask, last: SendAttempt | None, waited: float) -> str:
    metric = TaskWaitMetric.objects.filter(task=task).first()
    first_send = (
        f"first send {(metric.first_send_time - metric.queue_entry_time).total_seconds():.2f} s after queue entry"
        if metric and metric.first_send_time
        else "first send time not recorded"
    )
    via = f" via {last.service.name}" if last and last.service else ""
    code = f", SMTP {last.smtp_code}" if last and last.smtp_code else ""
    return f"mail to {subtask.recipient_email} sent{via}{code}; {first_send} (seen after {waited:.2f} s)"


def _describe_attempt(attempt: SendAttempt | None) -> str:
    if attempt is None:
        return "none (no scheduler claimed it)"
    service = attempt.service.name if attempt.service else "deleted service"
    code = attempt.smtp_code if attempt.smtp_code is not None else "-"
    reply = " ".join(attempt.smtp_reply.split())[:200] or "no reply"
    return f"{attempt.outcome} via {service} at {attempt.started_at:%H:%M:%S}: SMTP {code} {reply}"


def _give_up(tasks: Sequence[Task]) -> str:
    """Cancel unfinished probes so that a scheduler started later does not send them unexpectedly."""
    cancelled = 0
    for task in tasks:
        task.refresh_from_db(fields=["status"])
        if task.status in FINISHED_TASKS:
            continue
        try:
            task_cancel(task=task)
        except TaskStateError:  # it finished between the read and the cancel
            continue
        cancelled += 1
    return f"{cancelled} unfinished validation task(s) cancelled (kept as history)"


# --- monitoring ---------------------------------------------------------------


def check_monitoring(endpoint: Endpoint, *, max_sample_age: float, now: dt.datetime | None = None) -> CheckResult:
    """/metrics serves edm_ figures, a queue sample is recent, and a scheduler heartbeat is live."""
    now = now or timezone.now()
    parts = [_metrics_part(endpoint), _sample_part(now, max_sample_age), _heartbeat_part(now)]
    if endpoint.token:
        parts.append(_performance_part(endpoint))
    failing = [text for ok, text in parts if not ok]
    if not failing:
        return CheckResult("monitoring", PASS, "; ".join(text for _ok, text in parts))
    return CheckResult("monitoring", FAIL, "; ".join(failing), tuple(f"ok: {text}" for ok, text in parts if ok))


def _metrics_part(endpoint: Endpoint) -> tuple[bool, str]:
    try:
        # The deployment's own metrics credentials (EDM_METRICS_TOKEN...), as Prometheus sends them.
        response = endpoint.get("/metrics", headers=MetricsCredentials.from_settings().client_headers())
    except requests.RequestException as exc:
        return False, f"cannot reach {endpoint.display}/metrics ({type(exc).__name__})"
    if response.status_code != 200:
        if response.status_code in (401, 403):
            code = response.status_code
            return False, f"/metrics refused this command (HTTP {code}): run it with the web's EDM_METRICS_* values"
        return False, f"/metrics answered HTTP {response.status_code}"
    return metrics_verdict(response.text)


def metrics_verdict(text: str) -> tuple[bool, str]:
    """Whether a /metrics page carries the queue's figures, read from the database (edm_queue_metrics_up 1)."""
    try:
        families = {family.name: family for family in text_string_to_metric_families(text)}
    except ValueError:
        return False, "/metrics is not in the Prometheus text format"
    missing = [name for name in QUEUE_METRICS if name not in families]
    up = families.get("edm_queue_metrics_up")
    up_value = up.samples[0].value if up and up.samples else None
    if up_value != 1:
        shown = "missing" if up_value is None else f"{up_value:g}"
        return False, f"/metrics edm_queue_metrics_up {shown} (the web process cannot read the queue)"
    if missing:
        return False, f"/metrics lacks {', '.join(missing)}"
    edm = sum(1 for name in families if name.startswith("edm_"))
    pending = next((s.value for s in families["edm_queue_subtasks"].samples if s.labels.get("status") == "pending"), 0)
    return True, f"/metrics edm_queue_metrics_up 1 ({edm} edm_ families, {pending:g} pending)"


def _sample_part(now: dt.datetime, max_age: float) -> tuple[bool, str]:
    sample = QueueSample.objects.order_by("-taken_at").first()
    if sample is None:
        return False, "no queue sample yet (the sample_queue sweep has never run)"
    age = (now - sample.taken_at).total_seconds()
    text = f"last queue sample {age:.0f} s ago (limit {max_age:g} s)"
    if age > max_age:
        return False, f"{text}: the sample_queue sweep is not running"
    return True, text


def _heartbeat_part(now: dt.datetime) -> tuple[bool, str]:
    live = SystemMonitorService.live_schedulers(now=now)
    if not live:
        return False, "no live scheduler heartbeat"
    names = ", ".join(sorted(beat.worker_id for beat in live)[:5])
    return True, f"{len(live)} live scheduler(s) ({names})"


def _performance_part(endpoint: Endpoint) -> tuple[bool, str]:
    # The plan's monitoring check: the performance series answers with data.
    path = "/api/monitoring/performance-metrics"
    try:
        response = endpoint.get(path)
        data = response.json().get("data") if response.status_code == 200 else None
    except (requests.RequestException, ValueError, AttributeError):
        data = None
    if not data:
        return False, f"{path} gave no data"
    sent = sum(point.get("sent") or 0 for point in data)
    return True, f"performance-metrics {len(data)} buckets, {sent} sent in the last hour"


# --- throughput ---------------------------------------------------------------


def check_throughput(*, recipient: str, count: int, timeout: float, min_rate: float) -> CheckResult:
    """Queue ``count`` one-recipient tasks and time them until the schedulers have completed all of them.

    Timed like the plan: from before the first task is created to the moment
    all are seen finished (polled every POLL_SECONDS, so never overstated).
    """
    owner = validator_user()
    started = time.monotonic()
    tasks = [probe_create(recipient=recipient, label=f"throughput {i + 1}/{count}", owner=owner) for i in range(count)]
    created_in = time.monotonic() - started
    ids = [task.pk for task in tasks]
    deadline = started + created_in + timeout
    statuses = _task_statuses(ids)
    while sum(statuses.get(s, 0) for s in FINISHED_TASKS) < count and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        statuses = _task_statuses(ids)
    elapsed = time.monotonic() - started
    return throughput_result(
        tasks, statuses, count=count, elapsed=elapsed, created_in=created_in, timeout=timeout, min_rate=min_rate
    )


def _task_statuses(ids: Sequence[Any]) -> dict[str, int]:
    return dict(Task.objects.filter(pk__in=ids).values_list("status").annotate(n=Count("id")).order_by())


def throughput_result(
    tasks: Sequence[Task],
    statuses: dict[str, int],
    *,
    count: int,
    elapsed: float,
    created_in: float,
    timeout: float,
    min_rate: float,
) -> CheckResult:
    completed = statuses.get(Task.Status.COMPLETED, 0)
    rate = completed / elapsed if elapsed > 0 else 0.0
    summary = (
        f"{completed}/{count} tasks completed in {elapsed:.2f} s = {rate:.1f} tasks/s "
        f"(floor {min_rate:g}; created in {created_in:.2f} s)"
    )
    if completed == count and rate >= min_rate:
        return CheckResult("throughput", PASS, summary)
    if completed == count:
        return CheckResult("throughput", FAIL, summary, (rate_ceiling(),))
    details = [f"{status}: {n}" for status, n in sorted(statuses.items())]
    failed = SubTask.objects.filter(task__in=tasks, status=SubTask.Status.FAILED).first()
    if failed is not None:
        last = SendAttempt.objects.filter(subtask=failed).select_related("service").order_by("-started_at").first()
        details.append(f"a failed subtask's last attempt: {_describe_attempt(last)}")
    if sum(statuses.get(s, 0) for s in FINISHED_TASKS) < count:
        details.insert(0, f"not all finished within {timeout:g} s")
        details.append(_give_up(tasks))
    return CheckResult("throughput", FAIL, summary, tuple(details))


def rate_ceiling() -> str:
    """What the enabled services' sending rates allow at most, the usual bound on throughput."""
    default = get_config_by_category("queue")["default_sending_rate"]
    rates = [
        default if rate is None else rate
        for rate in EmailService.objects.filter(is_enabled=True).values_list("sending_rate", flat=True)
    ]
    if any(rate <= 0 for rate in rates):
        return f"{len(rates)} enabled service(s), at least one without a sending rate limit"
    ceiling = sum(1 / rate for rate in rates)
    return f"{len(rates)} enabled service(s) allow at most {ceiling:.1f} mails/s by their sending rates"
