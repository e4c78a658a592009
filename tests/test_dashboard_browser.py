"""The monitoring dashboard in a real browser: log in through the admin, open it, read the charts.

Runs Chromium headless through Playwright against the live test server. The
screenshot it saves (var/dashboard.png) is what an operator sees.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections import Counter
from pathlib import Path

import pytest
from django.utils import timezone

from monitoring.models import Alert, QueueSample
from queues.models import SendAttempt, SubTask, Task, TaskWaitMetric
from tests.factories import (
    AlertFactory,
    EmailServiceFactory,
    SubTaskFactory,
    TaskFactory,
    UserFactory,
    WorkerHeartbeatFactory,
)

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
SCREENSHOT = Path(__file__).resolve().parent.parent / "var" / "dashboard.png"
HOURS = 24
SAMPLE_EVERY = dt.timedelta(minutes=5)
SAMPLES = 288  # one every 5 minutes over the last 24 hours
ATTEMPTS = 36  # one every 37 minutes, every fifth one failed
WAITS = 25  # two first sends every 50 minutes, one waiting three times longer


def hour_of(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)


def make_data(now: dt.datetime) -> dict[str, int]:
    """A day of history; returns the figures the charts must show."""
    UserFactory(username="ops", is_staff=True, is_superuser=True)  # password "password"
    relay = EmailServiceFactory(name="relay-eu", used_quota=120, quota_date=now.date(), password="s3cr3t-pw")
    EmailServiceFactory(name="relay-us", is_enabled=False)
    task = TaskFactory(name="Spring newsletter", status=Task.Status.SENDING)
    sent_subtasks = SubTaskFactory.create_batch(12, task=task, status=SubTask.Status.SENT, service=relay)
    SubTaskFactory.create_batch(8, task=task)

    QueueSample.objects.bulk_create(
        QueueSample(
            taken_at=now - SAMPLE_EVERY * k,
            pending=int(400 + 300 * math.sin(k / 25)),
            in_flight=10 + k % 8,
            ready_services=1 + (k // 48) % 3,
            live_schedulers=1,
            sent_total=0,
            failed_total=0,
        )
        for k in range(SAMPLES)
    )
    attempts = []
    for k in range(1, ATTEMPTS + 1):
        started = now - dt.timedelta(minutes=37 * k)
        outcome = SendAttempt.Outcome.TRANSIENT if k % 5 == 0 else SendAttempt.Outcome.SENT
        attempts.append(
            SendAttempt(
                subtask=sent_subtasks[k % len(sent_subtasks)],
                service=relay,
                worker_id="sched-host-a-1",
                started_at=started,
                finished_at=started + dt.timedelta(milliseconds=180),
                outcome=outcome,
                smtp_code=250 if outcome == SendAttempt.Outcome.SENT else 421,
            )
        )
    SendAttempt.objects.bulk_create(attempts)
    first_sends = [now - dt.timedelta(minutes=50 * k) for k in range(1, WAITS + 1)]
    TaskWaitMetric.objects.bulk_create(
        TaskWaitMetric(
            task=task,
            user=task.owner,
            queue_entry_time=moment - dt.timedelta(seconds=wait),
            first_send_time=moment,
            wait_duration_seconds=wait,
            status=TaskWaitMetric.Status.PROCESSING,
        )
        for k, moment in enumerate(first_sends)
        for wait in (30 + 10 * k, 3 * (30 + 10 * k))
    )
    AlertFactory(
        alert_type="service_failing",
        subject="service:relay-eu",
        severity=Alert.Severity.CRITICAL,
        message="relay-eu failed 5 sends in a row",
    )
    WorkerHeartbeatFactory(worker_id="sched-host-a-1", hostname="host-a", in_flight=3, sent=1200, failed=14)

    sent = sum(1 for a in attempts if a.outcome == SendAttempt.Outcome.SENT)
    return {
        "sent": sent,
        "failed": ATTEMPTS - sent,
        "sent_hours": len(Counter(hour_of(a.started_at) for a in attempts if a.outcome == SendAttempt.Outcome.SENT)),
        "wait_hours": len({hour_of(moment) for moment in first_sends}),
    }


def points_of(page, selector: str) -> int:
    """How many data points the matching polylines (and lone-point markers) hold."""
    return sum(
        len(p.split()) for p in page.locator(selector).evaluate_all("els => els.map(e => e.getAttribute('points'))")
    )


def test_dashboard_renders_every_chart_with_data(live_server):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium, or set CHROMIUM_PATH")
    from playwright.sync_api import sync_playwright

    expected = make_data(timezone.now())
    SCREENSHOT.parent.mkdir(exist_ok=True)

    # No ORM from here on: the browser's event loop shares this thread.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{live_server.url}/admin/")
            page.fill("#id_username", "ops")
            page.fill("#id_password", "password")
            page.click("input[type=submit]")
            page.click("text=Monitoring dashboard")
            assert page.title().startswith("Monitoring dashboard")
            page.click(f"a[href='?hours={HOURS}']")
            page.wait_for_url(f"**/admin/dashboard/?hours={HOURS}")

            charts = page.locator("svg.chart")
            assert charts.count() == 4
            assert charts.evaluate_all("els => els.map(e => e.dataset.empty)") == ["false"] * 4

            depth = "svg[data-chart=queue-depth]"
            assert points_of(page, f"{depth} polyline[data-series=pending]") == SAMPLES
            assert points_of(page, f"{depth} polyline[data-series=in_flight]") == SAMPLES
            assert points_of(page, "svg[data-chart=ready-services] polyline[data-series=ready_services]") == SAMPLES

            sent_bars = page.locator("svg[data-chart=throughput] rect[data-series=sent]")
            assert sent_bars.count() == expected["sent_hours"]
            assert (
                sum(int(v) for v in sent_bars.evaluate_all("els => els.map(e => e.dataset.value)")) == expected["sent"]
            )
            failed_values = page.locator("svg[data-chart=throughput] rect[data-series=failed]").evaluate_all(
                "els => els.map(e => e.dataset.value)"
            )
            assert sum(int(v) for v in failed_values) == expected["failed"]
            bar_heights = sent_bars.evaluate_all("els => els.map(e => e.getBBox().height)")
            assert all(h > 0 for h in bar_heights)

            wait = "svg[data-chart=first-send-wait]"
            # One point per hour with a first send (a lone point is a one-point polyline plus a marker).
            assert points_of(page, f"{wait} polyline[data-series=wait_p50]") == expected["wait_hours"]
            assert points_of(page, f"{wait} polyline[data-series=wait_p95]") == expected["wait_hours"]

            alert_row = page.locator("#open-alerts tbody tr")
            assert alert_row.count() == 1
            assert "relay-eu failed 5 sends in a row" in alert_row.inner_text()
            assert "Critical" in alert_row.inner_text()
            scheduler_row = page.locator("#live-schedulers tr[data-worker='sched-host-a-1']")
            assert "host-a" in scheduler_row.inner_text()
            assert page.locator("#service-usage tbody tr").count() == 2
            assert "120 / 1000" in page.locator("#service-usage").inner_text()
            assert page.locator("[data-figure=sent]").inner_text() == str(expected["sent"])
            assert "s3cr3t-pw" not in page.content()

            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
