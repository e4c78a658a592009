"""Prometheus metrics counted in the scheduler process (all prefixed ``edm_``).

They live in ``SCHEDULER_REGISTRY``, served by ``run_scheduler --metrics-port N``
(``queues.metrics_server``); they describe what that process did since it
started, so Prometheus sums them across processes:

- ``edm_mails_sent_total{service}`` counter: mails handed over to a service;
- ``edm_mails_failed_total{service,kind}`` counter: failed attempts, kind
  ``transient`` (retried, or failed once out of retries) or ``permanent``;
- ``edm_mails_suppressed_total`` counter: claimed recipients found on a
  suppression list (marked suppressed, never sent);
- ``edm_claim_seconds{result}`` histogram: one claim transaction, by result
  (claimed, no_service, no_work, retry);
- ``edm_send_seconds{outcome}`` histogram: one SMTP/ESP conversation;
- ``edm_recovered_subtasks_total{rule}`` counter: claims given back by the
  recovery sweeps that this process ran (rule dead_worker or timeout);
- ``edm_first_send_wait_seconds`` histogram: queue entry to first send, per task.

The figures read from the database at scrape time are ``monitoring.metrics``'s;
they stay out of this registry, so a scrape of a scheduler never queries the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.process_collector import ProcessCollector

SCHEDULER_REGISTRY = CollectorRegistry()
ProcessCollector(registry=SCHEDULER_REGISTRY)

MAILS_SENT = Counter(
    "edm_mails_sent", "Mails handed over to a service by this process.", ["service"], registry=SCHEDULER_REGISTRY
)
MAILS_FAILED = Counter(
    "edm_mails_failed",
    "Failed send attempts in this process, by service and kind (transient or permanent).",
    ["service", "kind"],
    registry=SCHEDULER_REGISTRY,
)
MAILS_SUPPRESSED = Counter(
    "edm_mails_suppressed",
    "Recipients this process's claims found on a suppression list (marked suppressed, never sent).",
    registry=SCHEDULER_REGISTRY,
)
CLAIM_SECONDS = Histogram(
    "edm_claim_seconds",
    "Duration of one claim transaction, by result.",
    ["result"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=SCHEDULER_REGISTRY,
)
SEND_SECONDS = Histogram(
    "edm_send_seconds",
    "Duration of one send (the SMTP or ESP conversation), by outcome.",
    ["outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=SCHEDULER_REGISTRY,
)
RATE_SLOTS_MISSED = Counter(
    "edm_rate_slots_missed_total",
    "Rate slots whose start window passed before the send could start (the mail was given back, unsent).",
    registry=SCHEDULER_REGISTRY,
)
RECOVERED = Counter(
    "edm_recovered_subtasks",
    "Claimed subtasks given back to the queue by recovery, by rule.",
    ["rule"],
    registry=SCHEDULER_REGISTRY,
)
FIRST_SEND_WAIT = Histogram(
    "edm_first_send_wait_seconds",
    "Seconds from a task's queue entry to its first sent mail.",
    # Around the alert thresholds (300, 600, 1800 s by default).
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
    registry=SCHEDULER_REGISTRY,
)


def count_send_results(results: Iterable[tuple[str, str]]) -> None:
    """Count (service name, outcome) pairs of recorded send attempts."""
    for service, outcome in results:
        if outcome == "sent":
            MAILS_SENT.labels(service).inc()
        else:
            MAILS_FAILED.labels(service, outcome).inc()


def recovered_by_rule(counts: Mapping[str, int | float]) -> dict[str, int]:
    """A recovery report's ``<rule>.<action>`` figures as subtasks given back, by rule."""
    by_rule: dict[str, int] = {}
    for key, n in counts.items():
        rule, _, action = key.partition(".")
        # stuck_task counts tasks, not subtasks; already_done means nothing was given back.
        if rule != "stuck_task" and action != "already_done" and n:
            by_rule[rule] = by_rule.get(rule, 0) + int(n)
    return by_rule


def count_recovered(counts: Mapping[str, int]) -> None:
    """Count a recovery report in this process's edm_recovered_subtasks_total."""
    for rule, n in recovered_by_rule(counts).items():
        RECOVERED.labels(rule).inc(n)
