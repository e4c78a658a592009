"""performance_series and queue_depth_series: exact counts per bucket, empty buckets included."""

from __future__ import annotations

import datetime as dt

import pytest

from monitoring.models import QueueSample
from monitoring.services.performance import percentile, performance_series, queue_depth_series
from queues.models import SendAttempt

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone.utc)


def attempt(subtask, service, at, outcome):
    return SendAttempt.objects.create(
        subtask=subtask, service=service, worker_id="w", started_at=at, finished_at=at, outcome=outcome
    )


def test_minute_buckets_count_attempts_and_wait_percentiles(subtask, email_service, task_wait_metric_factory):
    for seconds, outcome in [(5, "sent"), (20, "sent"), (50, "transient"), (65, "sent"), (200, "permanent")]:
        attempt(subtask, email_service, T0 + dt.timedelta(seconds=seconds), outcome)
    attempt(subtask, email_service, T0 - dt.timedelta(seconds=1), "sent")  # before the range
    for wait, at in [(10, 30), (20, 40), (30, 50), (40, 55), (100, 70)]:
        task_wait_metric_factory(
            status="processing", first_send_time=T0 + dt.timedelta(seconds=at), wait_duration_seconds=wait
        )
    task_wait_metric_factory()  # still waiting: no first send

    series = performance_series(since=T0, until=T0 + dt.timedelta(minutes=4), bucket="minute")

    assert series == [
        {
            "time": "2026-03-02T10:00:00+00:00",
            "sent": 2,
            "failed": 1,
            "success_rate": 66.67,
            "wait_p50": 25.0,
            "wait_p95": 38.5,
        },
        {
            "time": "2026-03-02T10:01:00+00:00",
            "sent": 1,
            "failed": 0,
            "success_rate": 100.0,
            "wait_p50": 100.0,
            "wait_p95": 100.0,
        },
        {
            "time": "2026-03-02T10:02:00+00:00",
            "sent": 0,
            "failed": 0,
            "success_rate": None,
            "wait_p50": None,
            "wait_p95": None,
        },
        {
            "time": "2026-03-02T10:03:00+00:00",
            "sent": 0,
            "failed": 1,
            "success_rate": 0.0,
            "wait_p50": None,
            "wait_p95": None,
        },
    ]


def test_hour_buckets_start_at_the_hour_containing_since(subtask, email_service):
    attempt(subtask, email_service, T0 + dt.timedelta(minutes=30), "sent")
    attempt(subtask, email_service, T0 + dt.timedelta(minutes=90), "sent")

    series = performance_series(since=T0 + dt.timedelta(minutes=10), until=T0 + dt.timedelta(hours=2), bucket="hour")

    assert [(p["time"], p["sent"]) for p in series] == [
        ("2026-03-02T10:00:00+00:00", 1),
        ("2026-03-02T11:00:00+00:00", 1),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"bucket": "day"}, "bucket must be one of minute, hour", id="bucket"),
        pytest.param({"until": T0}, "until must be after since", id="empty-range"),
        pytest.param({"until": T0 + dt.timedelta(days=3)}, "at most 2000 are allowed", id="too-many"),
    ],
)
def test_bad_arguments_raise_value_error(db, kwargs, message):
    with pytest.raises(ValueError, match=message):
        performance_series(since=T0, **{"until": T0 + dt.timedelta(hours=1), **kwargs})


def test_percentile_interpolates_between_ranks():
    assert (percentile([], 50), percentile([7], 95), percentile([1, 2, 3, 4], 50)) == (None, 7.0, 2.5)


def test_queue_depth_series_returns_the_samples_in_range(db):
    for minute, pending in [(0, 10), (1, 8), (5, 3)]:
        QueueSample.objects.create(
            taken_at=T0 + dt.timedelta(minutes=minute),
            pending=pending,
            in_flight=2,
            ready_services=1,
            live_schedulers=1,
            sent_total=0,
            failed_total=0,
        )

    series = queue_depth_series(since=T0, until=T0 + dt.timedelta(minutes=2))

    assert series == [
        {"time": "2026-03-02T10:00:00+00:00", "pending": 10, "in_flight": 2, "ready_services": 1, "live_schedulers": 1},
        {"time": "2026-03-02T10:01:00+00:00", "pending": 8, "in_flight": 2, "ready_services": 1, "live_schedulers": 1},
    ]
