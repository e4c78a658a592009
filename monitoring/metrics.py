"""The queue's own Prometheus metrics (all prefixed ``edm_``).

Two kinds, kept apart on purpose:

**Read from the database at scrape time** (``QueueCollector``, registered in
the default registry, so django-prometheus serves them at ``/metrics`` of the
web process; any web process gives the same figures):

- ``edm_queue_subtasks{status}`` gauge: subtasks per queue status
  (pending, allocated, processing, parked);
- ``edm_queue_due_subtasks`` gauge: pending subtasks of runnable tasks that
  could be sent now;
- ``edm_ready_services`` gauge: services that could be claimed now;
- ``edm_live_schedulers`` gauge: scheduler processes with a fresh heartbeat;
- ``edm_stalled_schedulers`` gauge: processes still reporting whose recorder or claim loop is stuck;
- ``edm_oldest_waiting_task_seconds`` gauge: first-send wait so far of the
  longest-waiting runnable task (0 when none waits);
- ``edm_open_alerts{severity}`` gauge: alerts not resolved, per severity;
- ``edm_service_sent_total{service}`` / ``edm_service_failed_total{service}``
  counters: each service's delivered and failed attempts (its
  total_sent / total_failed columns);
- ``edm_sweep_runs_total{sweep}`` / ``edm_sweep_last_finished_timestamp_seconds{sweep}``:
  each periodic sweep's runs and when it last finished, whichever process ran it
  (alert on ``time() - edm_sweep_last_finished_timestamp_seconds{sweep="recover_dead_workers"}``:
  nothing recovers crashed schedulers' claims when beat or the worker is down);
- ``edm_sweep_recovered_subtasks_total{rule}`` counter: claims given back by the
  recovery sweeps (dead_worker, timeout), all processes, from the sweeps' totals;
- ``edm_reputation_answered{service}``, ``edm_reputation_delivered{service}``,
  ``edm_reputation_hard_bounce_rate{service}``, ``edm_reputation_complaint_rate{service}``
  gauges: over the last ``reputation.window_hours``, each service with mail in
  the window (deliverability.reputation); a rate without a denominator is absent;
- ``edm_reputation_owners_over_limit{limit}`` gauge: owners past the hard-bounce
  or complaint limit, as the ``reputation_check`` sweep last counted them (a
  count, not one series per owner: users are many, and their ids do not belong
  in the monitoring system; their figures are in the API);
- ``edm_queue_metrics_up`` gauge: 1 when the figures above could be read,
  0 when the database did not answer (the others are then absent).

**Counted in the scheduler process**: ``queues.metrics`` (``SCHEDULER_REGISTRY``,
served by ``run_scheduler --metrics-port N``).

The DB collector stays out of the scheduler's registry, so a scrape of a
scheduler never queries the database.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from common.metrics_auth import MetricsCredentials, Verdict, refusal
from queues.metrics import recovered_by_rule

logger = logging.getLogger(__name__)

_collector_lock = threading.Lock()
_collector_registered = False


class QueueCollector:
    """Reads the queue's figures from the database on every scrape (a handful of indexed queries)."""

    def describe(self) -> list[Metric]:
        # Declared without touching the database (registration happens at start-up).
        return [
            GaugeMetricFamily("edm_queue_subtasks", "", labels=["status"]),
            GaugeMetricFamily("edm_queue_due_subtasks", ""),
            GaugeMetricFamily("edm_ready_services", ""),
            GaugeMetricFamily("edm_live_schedulers", ""),
            GaugeMetricFamily("edm_stalled_schedulers", ""),
            GaugeMetricFamily("edm_oldest_waiting_task_seconds", ""),
            GaugeMetricFamily("edm_open_alerts", "", labels=["severity"]),
            CounterMetricFamily("edm_service_sent", "", labels=["service"]),
            CounterMetricFamily("edm_service_failed", "", labels=["service"]),
            CounterMetricFamily("edm_sweep_runs", "", labels=["sweep"]),
            GaugeMetricFamily("edm_sweep_last_finished_timestamp_seconds", "", labels=["sweep"]),
            CounterMetricFamily("edm_sweep_recovered_subtasks", "", labels=["rule"]),
            *(GaugeMetricFamily(name, "", labels=["service"]) for name in REPUTATION_SERVICE_GAUGES),
            GaugeMetricFamily("edm_reputation_owners_over_limit", "", labels=["limit"]),
            GaugeMetricFamily("edm_queue_metrics_up", ""),
        ]

    def collect(self) -> Iterator[Metric]:
        try:
            metrics = list(self._read())
        except DatabaseError as exc:
            logger.warning("queue metrics unavailable", extra={"error": str(exc).strip()})
            yield GaugeMetricFamily("edm_queue_metrics_up", "1 when the queue figures could be read.", value=0)
            return
        yield from metrics
        yield GaugeMetricFamily("edm_queue_metrics_up", "1 when the queue figures could be read.", value=1)

    @staticmethod
    def _read() -> Iterator[Metric]:
        from django.db.models import Count
        from django.utils import timezone

        from monitoring.models import Alert
        from monitoring.services.system import SystemMonitorService as system
        from queues.models import EmailService

        now = timezone.now()
        depth = GaugeMetricFamily("edm_queue_subtasks", "Subtasks per queue status.", labels=["status"])
        for status, n in system.queue_depth().items():
            depth.add_metric([status], n)
        yield depth
        yield GaugeMetricFamily(
            "edm_queue_due_subtasks", "Pending subtasks that could be sent now.", value=system.backlog(now=now)["due"]
        )
        yield GaugeMetricFamily(
            "edm_ready_services", "Services that could be claimed now.", value=system.ready_services(now=now)
        )
        yield GaugeMetricFamily(
            "edm_live_schedulers",
            "Scheduler processes with a fresh heartbeat.",
            value=len(system.live_schedulers(now=now)),
        )
        yield GaugeMetricFamily(
            "edm_stalled_schedulers",
            "Scheduler processes still reporting whose recorder or claim loop is stuck.",
            value=len(system.stalled_schedulers(now=now)),
        )
        oldest = system.oldest_waiting_task(now=now)
        yield GaugeMetricFamily(
            "edm_oldest_waiting_task_seconds",
            "First-send wait so far of the longest-waiting runnable task.",
            value=oldest["wait_seconds"] if oldest else 0,
        )
        alerts = GaugeMetricFamily("edm_open_alerts", "Alerts not resolved, per severity.", labels=["severity"])
        open_counts = dict(
            Alert.objects.exclude(status=Alert.Status.RESOLVED)
            .values_list("severity")
            .annotate(n=Count("id"))
            .order_by()
        )
        for severity in Alert.Severity.values:
            alerts.add_metric([severity], open_counts.get(severity, 0))
        yield alerts
        sent = CounterMetricFamily("edm_service_sent", "Delivered attempts per service.", labels=["service"])
        failed = CounterMetricFamily("edm_service_failed", "Failed attempts per service.", labels=["service"])
        for name, total_sent, total_failed in EmailService.objects.values_list("name", "total_sent", "total_failed"):
            sent.add_metric([name], total_sent)
            failed.add_metric([name], total_failed)
        yield sent
        yield failed
        yield from _sweep_metrics()
        yield from _reputation_metrics()


def _sweep_metrics() -> Iterator[Metric]:
    """The periodic sweeps as recorded in the database, whichever process ran them (a scheduler or Celery)."""
    from queues.maintenance import SWEEPS
    from queues.models import MaintenanceRun

    runs = {run.name: run for run in MaintenanceRun.objects.all()}
    count = CounterMetricFamily("edm_sweep_runs", "Runs of each periodic sweep, all processes.", labels=["sweep"])
    finished = GaugeMetricFamily(
        "edm_sweep_last_finished_timestamp_seconds",
        "Unix time each periodic sweep last finished (0: never).",
        labels=["sweep"],
    )
    recovered: dict[str, int] = {"dead_worker": 0, "timeout": 0}
    for name in SWEEPS:
        run = runs.get(name)
        count.add_metric([name], run.runs if run else 0)
        finished.add_metric([name], run.last_finished_at.timestamp() if run and run.last_finished_at else 0)
        if run and name in ("recover_dead_workers", "recover_stuck"):
            for rule, n in recovered_by_rule(run.totals).items():
                recovered[rule] = recovered.get(rule, 0) + n
    yield count
    yield finished
    given_back = CounterMetricFamily(
        "edm_sweep_recovered_subtasks",
        "Claims given back by the recovery sweeps, by rule, all processes.",
        labels=["rule"],
    )
    for rule, n in sorted(recovered.items()):
        given_back.add_metric([rule], n)
    yield given_back


REPUTATION_SERVICE_GAUGES = {
    "edm_reputation_answered": "Sends delivered or refused for good in the reputation window, per service.",
    "edm_reputation_delivered": "Sends delivered in the reputation window, per service.",
    "edm_reputation_hard_bounce_rate": "Hard bounces per answered send in the reputation window, per service.",
    "edm_reputation_complaint_rate": "Complaints per delivered mail in the reputation window, per service.",
}


def _reputation_metrics() -> Iterator[Metric]:
    """Bounce and complaint rates per service over the window; owners past a limit, counted by the sweep."""
    from common.dbclock import db_now
    from deliverability.reputation import reputation_config, service_rates, window_start
    from queues.models import EmailService, MaintenanceRun

    config = reputation_config()
    rates = service_rates(since=window_start(db_now(), config["window_hours"]), config=config)
    names = dict(EmailService.objects.filter(pk__in=list(rates)).values_list("pk", "name"))
    gauges = {
        name: GaugeMetricFamily(name, text, labels=["service"]) for name, text in REPUTATION_SERVICE_GAUGES.items()
    }
    for service_id, r in sorted(rates.items(), key=lambda item: names.get(item[0], "")):
        label = [names.get(service_id, str(service_id))]
        gauges["edm_reputation_answered"].add_metric(label, r.answered)
        gauges["edm_reputation_delivered"].add_metric(label, r.sent)
        if r.hard_bounce_rate is not None:
            gauges["edm_reputation_hard_bounce_rate"].add_metric(label, r.hard_bounce_rate)
        if r.complaint_rate is not None:
            gauges["edm_reputation_complaint_rate"].add_metric(label, r.complaint_rate)
    yield from gauges.values()
    last = MaintenanceRun.objects.filter(name="reputation_check").values_list("last_result", flat=True).first() or {}
    owners = GaugeMetricFamily(
        "edm_reputation_owners_over_limit",
        "Owners past the hard-bounce or complaint limit at the last reputation_check sweep.",
        labels=["limit"],
    )
    owners.add_metric(["hard_bounce"], last.get("owners_over_hard_bounce_limit", 0))
    owners.add_metric(["complaint"], last.get("owners_over_complaint_limit", 0))
    yield owners


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: django-prometheus's figures and the queue's, summed over every web worker.

    Under gunicorn (edm/gunicorn_conf.py) PROMETHEUS_MULTIPROC_DIR is set and each
    worker's figures are in files there; the queue's are read from the database.
    Otherwise (runserver, one process) the default registry holds both.
    Scrapers authenticate (common/metrics_auth.py).
    """
    credentials = MetricsCredentials.from_settings()
    verdict = credentials.check(request.headers.get("Authorization"))
    if verdict is not Verdict.ALLOW:
        status, headers, body = refusal(credentials, verdict)
        return HttpResponse(body, status=status, headers=headers, content_type="text/plain; charset=utf-8")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(QueueCollector())
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def register_queue_collector() -> None:
    """Add QueueCollector to the default registry (idempotent: ready() may run more than once)."""
    global _collector_registered
    with _collector_lock:
        if _collector_registered:
            return
        REGISTRY.register(QueueCollector())
        _collector_registered = True
