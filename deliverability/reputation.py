"""Bounce and complaint rates per task, service and owner, and the guards that act on them.

Counting happens in the scheduler's recorder, inside the transaction that
records a batch of outcomes (each outcome is applied there exactly once):
``reputation_count`` adds the batch to hourly counts per service and per
owner, and to each task's lifetime tally. Rates are then sums over a few rows:

- hard-bounce rate = hard bounces / answered sends, where an answered send is
  one delivered or refused for good (a temporary refusal retried later is
  not an answer, so retries never count twice);
- complaint rate = complaints / delivered mails, complaints being the
  suppression rows of reason ``complaint`` that name the service or owner
  (they come from ESP webhooks);
- neither is judged below ``reputation.min_sample`` (answered sends,
  delivered mails for complaints).

The guards: a task whose hard-bounce rate passes
``reputation.hard_bounce_rate_limit`` is paused by the recorder (queues code,
after each batch) with an alert; services and owners past a limit over the
last ``reputation.window_hours`` raise alerts from the ``reputation_check`` sweep.

This module names queue rows by id only and never imports the queue app.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, F, Sum

from common.dbclock import db_now
from config.services import get_config_by_category
from deliverability.bounces import Bounce
from deliverability.models import OwnerReputationHour, ServiceReputationHour, Suppression, TaskBounceTally
from deliverability.signals import reputation_judged, task_over_bounce_limit

logger = logging.getLogger(__name__)

HARD_BOUNCE = "hard_bounce"
COMPLAINT = "complaint"
# Hourly counts are kept for the longest window the setting allows, and an hour more.
KEEP_HOURS = 168 + 1
SERVICE_ALERT = "service_reputation"
OWNER_ALERT = "owner_reputation"
TASK_ALERT = "task_hard_bounces"


# --- counting (the recorder) ------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One recorded send outcome, as the counts need it."""

    task_id: uuid.UUID
    owner_id: uuid.UUID
    service_id: uuid.UUID
    sent: bool
    final: bool  # delivered, or refused for good
    bounce: str = Bounce.NONE


@dataclass(frozen=True)
class TaskTally:
    """A task's answered sends and hard bounces, and both as they were when the guard last acted on it."""

    task_id: uuid.UUID
    answered: int
    hard_bounces: int
    checked_answered: int = 0
    checked_hard_bounces: int = 0

    @property
    def new_answered(self) -> int:
        return self.answered - self.checked_answered

    @property
    def new_hard_bounces(self) -> int:
        return self.hard_bounces - self.checked_hard_bounces

    def over_limit(self, *, limit: float, min_sample: int) -> bool:
        """Past the hard-bounce limit on the answers since the guard last acted (or ever), with enough of them."""
        answered = self.new_answered
        return answered >= min_sample and self.new_hard_bounces / answered > limit


@dataclass
class _Counts:
    answered: int = 0
    sent: int = 0
    hard: int = 0
    policy: int = 0

    def add(self, answer: Answer) -> None:
        self.answered += answer.final
        self.sent += answer.sent
        self.hard += answer.bounce == Bounce.HARD
        self.policy += answer.bounce == Bounce.POLICY

    def row(self) -> tuple[int, int, int, int]:
        return self.answered, self.sent, self.hard, self.policy


def hour_of(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def reputation_count(*, answers: Iterable[Answer], now: dt.datetime) -> dict[uuid.UUID, TaskTally]:
    """Add recorded outcomes to the hourly counts and the tasks' tallies; returns the tallies they changed.

    Call inside the transaction that records the outcomes, once per outcome
    (the recorder's attempt ids see to that). ``now`` is the database's time.
    Rows are written in key order, so concurrent recorders never deadlock on them.
    """
    services: dict[uuid.UUID, _Counts] = defaultdict(_Counts)
    owners: dict[uuid.UUID, _Counts] = defaultdict(_Counts)
    tasks: dict[uuid.UUID, _Counts] = defaultdict(_Counts)
    for answer in answers:
        if not (answer.final or answer.bounce == Bounce.POLICY):
            continue  # a temporary failure: nothing to count yet
        services[answer.service_id].add(answer)
        owners[answer.owner_id].add(answer)
        if answer.final:
            tasks[answer.task_id].add(answer)
    if not services:
        return {}
    hour = hour_of(now)
    if connection.vendor == "postgresql":
        return _count_postgresql(hour, services, owners, tasks)
    return _count_portable(hour, services, owners, tasks)


# One round trip for the three upserts. Each conflict adds to the row, and
# the input is in key order (the locks are taken in that order).
_COUNT_SQL = """
WITH services AS (
    INSERT INTO service_reputation_hours AS r (hour, service_id, answered, sent, hard_bounces, policy_rejections)
    SELECT %(hour)s, v.id, v.answered, v.sent, v.hard, v.policy
    FROM unnest(%(s_ids)s::uuid[], %(s_answered)s::int[], %(s_sent)s::int[], %(s_hard)s::int[],
                %(s_policy)s::int[]) AS v(id, answered, sent, hard, policy)
    ORDER BY v.id
    ON CONFLICT (hour, service_id) DO UPDATE
    SET answered = r.answered + EXCLUDED.answered, sent = r.sent + EXCLUDED.sent,
        hard_bounces = r.hard_bounces + EXCLUDED.hard_bounces,
        policy_rejections = r.policy_rejections + EXCLUDED.policy_rejections
), owners AS (
    INSERT INTO owner_reputation_hours AS r (hour, owner_id, answered, sent, hard_bounces, policy_rejections)
    SELECT %(hour)s, v.id, v.answered, v.sent, v.hard, v.policy
    FROM unnest(%(o_ids)s::uuid[], %(o_answered)s::int[], %(o_sent)s::int[], %(o_hard)s::int[],
                %(o_policy)s::int[]) AS v(id, answered, sent, hard, policy)
    ORDER BY v.id
    ON CONFLICT (owner_id, hour) DO UPDATE
    SET answered = r.answered + EXCLUDED.answered, sent = r.sent + EXCLUDED.sent,
        hard_bounces = r.hard_bounces + EXCLUDED.hard_bounces,
        policy_rejections = r.policy_rejections + EXCLUDED.policy_rejections
)
INSERT INTO task_bounce_tallies AS t (task_id, answered, hard_bounces, checked_answered, checked_hard_bounces)
SELECT v.id, v.answered, v.hard, 0, 0
FROM unnest(%(t_ids)s::uuid[], %(t_answered)s::int[], %(t_hard)s::int[]) AS v(id, answered, hard)
ORDER BY v.id
ON CONFLICT (task_id) DO UPDATE
SET answered = t.answered + EXCLUDED.answered, hard_bounces = t.hard_bounces + EXCLUDED.hard_bounces
RETURNING t.task_id, t.answered, t.hard_bounces, t.checked_answered, t.checked_hard_bounces
"""


_COLUMN = {"answered": 0, "sent": 1, "hard": 2, "policy": 3}


def _columns(prefix: str, counts: dict[uuid.UUID, _Counts], names: Sequence[str]) -> dict[str, list]:
    """The counts as parallel arrays in key order: {prefix}_ids, {prefix}_answered, ..."""
    keys = sorted(counts)
    rows = [counts[key].row() for key in keys]
    params: dict[str, list] = {f"{prefix}_ids": keys}
    for name in names:
        params[f"{prefix}_{name}"] = [row[_COLUMN[name]] for row in rows]
    return params


def _count_postgresql(
    hour: dt.datetime,
    services: dict[uuid.UUID, _Counts],
    owners: dict[uuid.UUID, _Counts],
    tasks: dict[uuid.UUID, _Counts],
) -> dict[uuid.UUID, TaskTally]:
    params: dict[str, Any] = {"hour": hour}
    params |= _columns("s", services, ("answered", "sent", "hard", "policy"))
    params |= _columns("o", owners, ("answered", "sent", "hard", "policy"))
    params |= _columns("t", tasks, ("answered", "hard"))
    connection.ensure_connection()
    # Server-side binding: psycopg sends the arrays as arrays instead of quoting each element into the SQL.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_COUNT_SQL, params)
        return {row[0]: TaskTally(*row) for row in cursor.fetchall()}


def _count_portable(
    hour: dt.datetime,
    services: dict[uuid.UUID, _Counts],
    owners: dict[uuid.UUID, _Counts],
    tasks: dict[uuid.UUID, _Counts],
) -> dict[uuid.UUID, TaskTally]:
    """The same, a row at a time (SQLite: the recorder's transaction holds the write lock, nothing races it)."""
    for model, key_field, counts in (
        (ServiceReputationHour, "service_id", services),
        (OwnerReputationHour, "owner_id", owners),
    ):
        for key in sorted(counts):
            added = dict(zip(("answered", "sent", "hard_bounces", "policy_rejections"), counts[key].row(), strict=True))
            row = {"hour": hour, key_field: key}
            if not model.objects.filter(**row).update(**{name: F(name) + n for name, n in added.items()}):
                model.objects.create(**row, **added)
    for key in sorted(tasks):
        c = tasks[key]
        changes = {"answered": F("answered") + c.answered, "hard_bounces": F("hard_bounces") + c.hard}
        if not TaskBounceTally.objects.filter(task_id=key).update(**changes):
            TaskBounceTally.objects.create(task_id=key, answered=c.answered, hard_bounces=c.hard)
    rows = TaskBounceTally.objects.filter(task_id__in=list(tasks)).values_list(
        "task_id", "answered", "hard_bounces", "checked_answered", "checked_hard_bounces"
    )
    return {row[0]: TaskTally(*row) for row in rows}


# --- the task guard ---------------------------------------------------------------------


def tallies_over_limit(tallies: Iterable[TaskTally], *, config: dict[str, Any]) -> list[TaskTally]:
    """The tallies past the hard-bounce limit (``config`` is the reputation category)."""
    limit, min_sample = config["hard_bounce_rate_limit"], config["min_sample"]
    return [t for t in tallies if t.over_limit(limit=limit, min_sample=min_sample)]


def task_tally_check(tally: TaskTally) -> bool:
    """Mark the tally judged as it stands (compare-and-set): True for the one caller that gets to act on it."""
    return bool(
        TaskBounceTally.objects.filter(
            task_id=tally.task_id,
            checked_answered=tally.checked_answered,
            checked_hard_bounces=tally.checked_hard_bounces,
        ).update(checked_answered=tally.answered, checked_hard_bounces=tally.hard_bounces)
    )


def task_guard_reason(tally: TaskTally, *, config: dict[str, Any]) -> str:
    hard, answered = tally.new_hard_bounces, tally.new_answered
    return (
        f"{hard} hard bounces in {answered} answered sends ({100 * hard / answered:.1f} %), over the limit of "
        f"{100 * config['hard_bounce_rate_limit']:.1f} % (reputation.hard_bounce_rate_limit)"
    )


def task_bounce_alert(*, task_id: uuid.UUID, name: str, owner_id: uuid.UUID, reason: str, outcome: str) -> None:
    """Announce a task past the hard-bounce limit (an alert, where monitoring listens); ``outcome`` says
    what the guard did about it."""
    task_over_bounce_limit.send(
        sender=TaskBounceTally, task_id=task_id, name=name, owner_id=owner_id, reason=reason, outcome=outcome
    )


# --- rates over a window (the API, the dashboard, /metrics, the sweep) -----------------------


@dataclass
class Rates:
    answered: int = 0
    sent: int = 0
    hard_bounces: int = 0
    policy_rejections: int = 0
    complaints: int = 0
    over_limits: list[str] = field(default_factory=list)

    @property
    def hard_bounce_rate(self) -> float | None:
        return self.hard_bounces / self.answered if self.answered else None

    @property
    def complaint_rate(self) -> float | None:
        return self.complaints / self.sent if self.sent else None

    def judge(self, config: dict[str, Any]) -> Rates:
        """Set ``over_limits``: which limits the rates pass, given enough of a sample."""
        self.over_limits = []
        rate = self.hard_bounce_rate
        if self.answered >= config["min_sample"] and rate is not None and rate > config["hard_bounce_rate_limit"]:
            self.over_limits.append(HARD_BOUNCE)
        rate = self.complaint_rate
        if self.sent >= config["min_sample"] and rate is not None and rate > config["complaint_rate_limit"]:
            self.over_limits.append(COMPLAINT)
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "answered": self.answered,
            "sent": self.sent,
            "hard_bounces": self.hard_bounces,
            "hard_bounce_rate": _rounded(self.hard_bounce_rate),
            "complaints": self.complaints,
            "complaint_rate": _rounded(self.complaint_rate),
            "policy_rejections": self.policy_rejections,
            "over_limits": list(self.over_limits),
        }


def _rounded(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 6)


def window_start(now: dt.datetime, hours: int) -> dt.datetime:
    """The window's first hour: the current hour and the ``hours - 1`` before it."""
    return hour_of(now) - dt.timedelta(hours=hours - 1)


def service_rates(*, since: dt.datetime, config: dict[str, Any]) -> dict[uuid.UUID, Rates]:
    """Every service with outcomes or complaints since ``since``, judged against ``config`` (reputation)."""
    rates = _summed(ServiceReputationHour.objects.filter(hour__gte=since), "service_id")
    complaints = _complaints(since, "service_id")
    return _with_complaints(rates, complaints, config)


def owner_rates(
    *, since: dt.datetime, config: dict[str, Any], owner_id: uuid.UUID | None = None
) -> dict[uuid.UUID, Rates]:
    """Every owner's rates (or only ``owner_id``'s) since ``since``."""
    hours = OwnerReputationHour.objects.filter(hour__gte=since)
    if owner_id is not None:
        hours = hours.filter(owner_id=owner_id)
    rates = _summed(hours, "owner_id")
    complaints = _complaints(since, "owner_id", owner_id)
    return _with_complaints(rates, complaints, config)


def _summed(hours, key: str) -> dict[uuid.UUID, Rates]:
    rows = (
        hours.values(key)
        .annotate(a=Sum("answered"), s=Sum("sent"), h=Sum("hard_bounces"), p=Sum("policy_rejections"))
        .order_by()
    )
    return {
        row[key]: Rates(answered=row["a"], sent=row["s"], hard_bounces=row["h"], policy_rejections=row["p"])
        for row in rows
    }


def _complaints(since: dt.datetime, key: str, owner_id: uuid.UUID | None = None) -> dict[uuid.UUID, int]:
    # The partial index idx_suppressions_complaints: reason = 'complaint' AND created_at >= since.
    found = Suppression.objects.filter(reason=Suppression.Reason.COMPLAINT, created_at__gte=since).exclude(
        **{f"{key}__isnull": True}
    )
    if owner_id is not None:
        found = found.filter(owner_id=owner_id)
    return dict(found.values_list(key).annotate(n=Count("id")).order_by())


def _with_complaints(
    rates: dict[uuid.UUID, Rates], complaints: dict[uuid.UUID, int], config: dict[str, Any]
) -> dict[uuid.UUID, Rates]:
    for key, n in complaints.items():
        rates.setdefault(key, Rates()).complaints = n
    for r in rates.values():
        r.judge(config)
    return rates


def reputation_config() -> dict[str, Any]:
    return get_config_by_category("reputation")


def services_table(*, since: dt.datetime, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every service with outcomes or complaints in the window, by name."""
    rates = service_rates(since=since, config=config)
    names = _service_names(rates)
    rows = [{"id": key, "name": names.get(key, str(key)), **r.as_dict()} for key, r in rates.items()]
    return sorted(rows, key=lambda row: row["name"])


def owners_over_limit(*, since: dt.datetime, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The owners past a limit in the window, worst hard-bounce rate first."""
    over = {key: r for key, r in owner_rates(since=since, config=config).items() if r.over_limits}
    names = dict(get_user_model().objects.filter(pk__in=list(over)).values_list("pk", "username"))
    rows = [{"id": key, "username": names.get(key, str(key)), **r.as_dict()} for key, r in over.items()]
    return sorted(rows, key=lambda row: (-(row["hard_bounce_rate"] or 0), row["username"]))


# --- the sweep -------------------------------------------------------------------------------


def reputation_check() -> dict[str, int]:
    """Raise (or count again) an alert for each service and owner past a limit; resolve those back under it.

    Also deletes hourly counts older than the longest window. Run every
    minute by the maintenance sweeps (queues.maintenance).
    """
    config = reputation_config()
    now = db_now()
    since = window_start(now, config["window_hours"])
    services = {k: r for k, r in service_rates(since=since, config=config).items() if r.over_limits}
    owners = {k: r for k, r in owner_rates(since=since, config=config).items() if r.over_limits}
    # The owners' figures are also what /metrics shows (counting every owner at each scrape would cost more).
    result = {
        "services_over_limit": len(services),
        "owners_over_hard_bounce_limit": sum(HARD_BOUNCE in r.over_limits for r in owners.values()),
        "owners_over_complaint_limit": sum(COMPLAINT in r.over_limits for r in owners.values()),
        "alerts_resolved": 0,
    }
    # Alerts are raised for those past a limit and resolved for the others by the receivers.
    responses = reputation_judged.send(sender=ServiceReputationHour, services=services, owners=owners, config=config)
    result["alerts_resolved"] = sum(resolved for _, resolved in responses)
    horizon = hour_of(now) - dt.timedelta(hours=KEEP_HOURS)
    result["hours_deleted"] = (
        ServiceReputationHour.objects.filter(hour__lt=horizon).delete()[0]
        + OwnerReputationHour.objects.filter(hour__lt=horizon).delete()[0]
    )
    return result


def _service_names(rates: dict[uuid.UUID, Rates]) -> dict[uuid.UUID, str]:
    from django.apps import apps

    service = apps.get_model("queues", "EmailService")
    return dict(service.objects.filter(pk__in=list(rates)).values_list("pk", "name"))
