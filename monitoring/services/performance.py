"""Throughput, success rate, first-send wait and queue depth over time, for charts and the API.

Definitions (they are what the figures mean everywhere they are shown):

- ``sent``: send attempts that delivered (``SendAttempt.outcome = sent``);
- ``failed``: send attempts that did not deliver, transient or permanent.
  A mail retried twice and then delivered counts 2 failed and 1 sent: the
  figure measures how the services behave, like each service's own
  success_rate does;
- ``success_rate``: ``100 * sent / (sent + failed)``, None in a bucket without attempts;
- attempts fall in the bucket of their ``started_at`` (the indexed column);
- ``wait_p50`` / ``wait_p95``: percentiles (linear interpolation) of the
  first-send wait, in seconds, of the tasks whose first send fell in the
  bucket (``TaskWaitMetric.first_send_time``); None when there were none.

Buckets are aligned on UTC minutes or hours, returned in time order, empty
ones included, each labelled by its start as an ISO-8601 string. Counting is
done by the database (``Trunc`` ... ``GROUP BY``), so a busy hour is not
loaded row by row; the same code runs on PostgreSQL and SQLite.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from django.db.models import Count
from django.db.models.functions import TruncHour, TruncMinute
from django.utils import timezone

from monitoring.models import QueueSample
from queues.models import SendAttempt, TaskWaitMetric

BUCKETS: dict[str, tuple[dt.timedelta, type]] = {
    "minute": (dt.timedelta(minutes=1), TruncMinute),
    "hour": (dt.timedelta(hours=1), TruncHour),
}
# A series longer than this is refused: 2000 minutes is a day and a half,
# 2000 hours almost three months. Bounds the response and the work.
MAX_BUCKETS = 2000
MAX_SAMPLES = 20_000  # queue samples are one a minute: two weeks
UTC = dt.timezone.utc


def performance_series(
    *, since: dt.datetime, until: dt.datetime | None = None, bucket: str = "minute"
) -> list[dict[str, Any]]:
    """One dict per bucket from ``since`` to ``until`` (default now); see the module docstring.

    Raises ValueError for an unknown bucket, an empty or reversed range, or
    more than MAX_BUCKETS buckets.
    """
    until = until or timezone.now()
    starts = bucket_starts(since=since, until=until, bucket=bucket)
    step, trunc = BUCKETS[bucket]
    sent: dict[dt.datetime, int] = defaultdict(int)
    failed: dict[dt.datetime, int] = defaultdict(int)
    attempts = (
        SendAttempt.objects.filter(started_at__gte=since, started_at__lt=until)
        .annotate(bucket=trunc("started_at", tzinfo=UTC))
        .values_list("bucket", "outcome")
        .annotate(n=Count("id"))
        .order_by()
    )
    for start, outcome, n in attempts:
        target = sent if outcome == SendAttempt.Outcome.SENT else failed
        target[_utc(start)] += n
    waits: dict[dt.datetime, list[int]] = defaultdict(list)
    for first_send, wait in TaskWaitMetric.objects.filter(
        first_send_time__gte=since, first_send_time__lt=until, wait_duration_seconds__isnull=False
    ).values_list("first_send_time", "wait_duration_seconds"):
        waits[_floor(first_send, step)].append(wait)
    return [_point(start, sent[start], failed[start], waits.get(start, [])) for start in starts]


def queue_depth_series(*, since: dt.datetime, until: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The queue samples taken from ``since`` to ``until`` (default now), oldest first.

    One point per sample (the sample_queue sweep takes one a minute); a gap in
    the series is a time when no sweep ran.
    """
    until = until or timezone.now()
    if until <= since:
        raise ValueError("until must be after since")
    samples = QueueSample.objects.filter(taken_at__gte=since, taken_at__lte=until).order_by("taken_at")
    return [
        {
            "time": _utc(taken_at).isoformat(),
            "pending": pending,
            "in_flight": in_flight,
            "ready_services": ready,
            "live_schedulers": live,
        }
        for taken_at, pending, in_flight, ready, live in samples.values_list(
            "taken_at", "pending", "in_flight", "ready_services", "live_schedulers"
        )[:MAX_SAMPLES]
    ]


def bucket_starts(*, since: dt.datetime, until: dt.datetime, bucket: str) -> list[dt.datetime]:
    """The UTC starts of the buckets that [since, until) touches; validates the arguments."""
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}, got {bucket!r}")
    if timezone.is_naive(since) or timezone.is_naive(until):
        raise ValueError("since and until must carry a time zone")
    if until <= since:
        raise ValueError("until must be after since")
    step = BUCKETS[bucket][0]
    first = _floor(since, step)
    count = int((until - first) / step) + (1 if (until - first) % step else 0)
    if count > MAX_BUCKETS:
        raise ValueError(f"the range holds {count} {bucket} buckets; at most {MAX_BUCKETS} are allowed")
    return [first + i * step for i in range(count)]


def percentile(values: list[int] | list[float], pct: float) -> float | None:
    """The pct-th percentile by linear interpolation between the closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def _point(start: dt.datetime, sent: int, failed: int, waits: list[int]) -> dict[str, Any]:
    attempts = sent + failed
    return {
        "time": start.isoformat(),
        "sent": sent,
        "failed": failed,
        "success_rate": round(100 * sent / attempts, 2) if attempts else None,
        "wait_p50": percentile(waits, 50),
        "wait_p95": percentile(waits, 95),
    }


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(UTC)


def _floor(value: dt.datetime, step: dt.timedelta) -> dt.datetime:
    value = _utc(value)
    if step >= dt.timedelta(hours=1):
        return value.replace(minute=0, second=0, microsecond=0)
    return value.replace(second=0, microsecond=0)
