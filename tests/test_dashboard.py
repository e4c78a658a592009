"""The staff monitoring dashboard at /admin/dashboard/ (rendered by the Django test client)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from monitoring.dashboard import DEFAULT_HOURS, parse_hours, thin
from monitoring.models import Alert, QueueSample
from queues.models import SendAttempt
from tests.factories import (
    AlertFactory,
    QueueSampleFactory,
    SendAttemptFactory,
    TaskWaitMetricFactory,
    WorkerHeartbeatFactory,
)

URL = "/admin/dashboard/"


@pytest.fixture
def staff_client(client, user_factory):
    client.force_login(user_factory(username="ops", is_staff=True, is_superuser=True))
    return client


def chart(page: str, chart_id: str) -> str:
    match = re.search(rf'<svg class="chart" data-chart="{chart_id}".*?</svg>', page, re.S)
    assert match, f"no chart {chart_id}"
    return match.group(0)


def test_the_dashboard_lives_under_the_admin_and_the_index_links_to_it(staff_client):
    assert reverse("admin:dashboard") == URL
    index = staff_client.get(reverse("admin:index")).content.decode()
    assert f'href="{URL}"' in index


@pytest.mark.parametrize("who", ["anonymous", "non-staff"])
def test_only_staff_see_the_dashboard(client, user_factory, who):
    if who == "non-staff":
        client.force_login(user_factory(username="customer", is_staff=False))

    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={URL}"


def test_an_empty_system_renders_no_data_charts(staff_client):
    response = staff_client.get(URL)

    assert response.status_code == 200
    page = response.content.decode()
    for chart_id in ("queue-depth", "ready-services", "throughput", "first-send-wait"):
        assert 'data-empty="true"' in chart(page, chart_id), chart_id
    assert "No open alerts." in page
    assert "No scheduler is running." in page
    assert "No sending services." in page


def test_the_dashboard_shows_charts_alerts_schedulers_and_services(staff_client, email_service_factory, task):
    now = timezone.now()
    service = email_service_factory(name="relay-eu", password="s3cr3t-pw", used_quota=12, quota_date=now.date())
    for minutes_ago, pending in ((50, 30), (30, 20), (10, 5)):
        QueueSampleFactory(
            taken_at=now - dt.timedelta(minutes=minutes_ago), pending=pending, in_flight=2, ready_services=1
        )
    for minutes_ago in (40, 20):
        SendAttemptFactory(service=service, started_at=now - dt.timedelta(minutes=minutes_ago))
    SendAttemptFactory(
        service=service, started_at=now - dt.timedelta(minutes=20), outcome=SendAttempt.Outcome.TRANSIENT
    )
    SendAttemptFactory(service=service, started_at=now - dt.timedelta(hours=30))  # outside the 6 hours
    TaskWaitMetricFactory(
        task=task,
        queue_entry_time=now - dt.timedelta(minutes=25),
        first_send_time=now - dt.timedelta(minutes=20),
        wait_duration_seconds=300,
    )
    AlertFactory(subject="service:relay-eu", severity=Alert.Severity.CRITICAL, message="5 failures in a row")
    AlertFactory(subject="gone", status=Alert.Status.RESOLVED)
    WorkerHeartbeatFactory(worker_id="sched-1")
    WorkerHeartbeatFactory(worker_id="sched-dead", last_seen_at=now - dt.timedelta(hours=1))
    WorkerHeartbeatFactory(worker_id="sched-stopped", stopped_at=now)

    response = staff_client.get(URL)

    assert response.status_code == 200
    page = response.content.decode()
    depth = chart(page, "queue-depth")
    pending_points = re.search(r'data-series="pending" points="([^"]+)"', depth).group(1).split()
    assert len(pending_points) == 3
    throughput = chart(page, "throughput")
    assert re.findall(r'data-series="(\w+)" data-value="(\d+)"', throughput) == [
        ("sent", "1"),
        ("sent", "1"),
        ("failed", "1"),
    ]
    assert 'data-series="wait_p50"' in chart(page, "first-send-wait")
    figures = response.context["figures"]
    assert {k: figures[k] for k in ("pending", "sent", "failed", "success_rate", "live_schedulers")} == {
        "pending": 4,  # the subtasks made for the attempts are still pending
        "sent": 2,
        "failed": 1,
        "success_rate": 66.67,
        "live_schedulers": 1,
    }
    assert [a.subject for a in response.context["alerts"]] == ["service:relay-eu"]
    assert "5 failures in a row" in page
    assert [s.worker_id for s in response.context["schedulers"]] == ["sched-1"]
    assert 'data-worker="sched-1"' in page
    assert "relay-eu" in page
    assert "12 / 1000" in page
    assert "s3cr3t-pw" not in page


def test_a_long_range_is_thinned_but_keeps_the_peak(staff_client):
    now = timezone.now()
    QueueSample.objects.bulk_create(
        QueueSample(
            taken_at=now - dt.timedelta(minutes=4 * k),
            pending=9999 if k == 301 else 10,
            in_flight=0,
            ready_services=1,
            live_schedulers=1,
            sent_total=0,
            failed_total=0,
        )
        for k in range(1000)
    )

    page = staff_client.get(URL, {"hours": "72"}).content.decode()

    depth = chart(page, "queue-depth")
    points = re.search(r'data-series="pending" points="([^"]+)"', depth).group(1).split()
    assert len(points) == 500  # 1000 samples, two to a point
    assert "pending: 10" in depth
    assert ">10k</text>" in depth  # the axis still reaches the one-sample peak


def test_the_most_severe_alerts_come_first(staff_client):
    AlertFactory(subject="w", severity=Alert.Severity.WARNING)
    AlertFactory(subject="e", severity=Alert.Severity.EMERGENCY)
    AlertFactory(subject="i", severity=Alert.Severity.INFO, status=Alert.Status.ACKNOWLEDGED)

    response = staff_client.get(URL)

    assert [a.subject for a in response.context["alerts"]] == ["e", "w", "i"]


def test_the_page_loads_nothing_from_the_network(staff_client):
    page = staff_client.get(URL).content.decode()

    assert not re.search(r'(src|href)="(https?:)?//', page)


@pytest.mark.parametrize(
    ("hours", "bucket"),
    [pytest.param("1", "minute", id="1h-per-minute"), pytest.param("72", "hour", id="72h-per-hour")],
)
def test_the_range_sets_the_throughput_bucket(staff_client, hours, bucket):
    response = staff_client.get(URL, {"hours": hours})

    assert response.status_code == 200
    assert response.context["hours"] == int(hours)
    assert f"Throughput per {bucket}" in response.content.decode()
    assert list(response.context["messages"]) == []


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("abc", id="text"),
        pytest.param("0", id="zero"),
        pytest.param("73", id="too-long"),
        pytest.param("-5", id="negative"),
        pytest.param("2.5", id="fraction"),
        pytest.param("9" * 40, id="huge"),
    ],
)
def test_a_bad_range_falls_back_with_a_message(staff_client, raw):
    response = staff_client.get(URL, {"hours": raw})

    assert response.status_code == 200
    assert response.context["hours"] == DEFAULT_HOURS
    assert [m.level_tag for m in response.context["messages"]] == ["warning"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, (6, None), id="missing"),
        pytest.param("", (6, None), id="empty"),
        pytest.param("1", (1, None), id="min"),
        pytest.param("72", (72, None), id="max"),
        pytest.param(" 24 ", (24, None), id="spaces"),
    ],
)
def test_parse_hours_accepts_1_to_72(raw, expected):
    assert parse_hours(raw) == expected


def test_thin_keeps_each_stretchs_peak_and_last_time():
    points = [{"time": f"t{i}", "pending": v} for i, v in enumerate([1, 9, 2, 3, 8, 1, 4])]

    assert thin(points, ["pending"], 3) == [
        {"time": "t2", "pending": 9},
        {"time": "t5", "pending": 8},
        {"time": "t6", "pending": 4},
    ]
    assert thin(points, ["pending"], 7) == points
