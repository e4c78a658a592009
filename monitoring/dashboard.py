"""The staff monitoring dashboard inside the admin: queue, throughput, waits, alerts, schedulers, services.

The view only reads: every figure comes from the monitoring services, and
the charts are drawn here as inline SVG (monitoring.charts).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from typing import Any

from django.contrib import admin, messages
from django.db.models import Case, IntegerField, Value, When
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.safestring import SafeString

from deliverability.reputation import owners_over_limit, reputation_config, services_table, window_start
from monitoring.charts import Series, bar_chart, line_chart
from monitoring.models import Alert
from monitoring.services.performance import performance_series, queue_depth_series
from monitoring.services.system import SystemMonitorService

DEFAULT_HOURS = 6
MIN_HOURS, MAX_HOURS = 1, 72
HOUR_CHOICES = (1, 6, 24, 72)
# Up to this many hours the throughput is counted per minute, beyond it per hour:
# 360 one-minute bars still fit the chart's width.
MINUTE_BUCKETS_UP_TO_HOURS = 6
# Queue samples come once a minute (4320 over 72 h); a chart 600 px wide shows
# no more, so longer ranges are thinned keeping each stretch's peak.
MAX_LINE_POINTS = 600
BUCKET_STEPS = {"minute": dt.timedelta(minutes=1), "hour": dt.timedelta(hours=1)}
MAX_ALERTS = 50
MAX_OWNERS_OVER_LIMIT = 20

COLORS = {
    "pending": "#417690",
    "in_flight": "#e8a33d",
    "ready_services": "#2e9b5f",
    "live_schedulers": "#7b5ea7",
    "sent": "#2e9b5f",
    "failed": "#ba2121",
    "wait_p50": "#417690",
    "wait_p95": "#ba2121",
}


def parse_hours(raw: str | None) -> tuple[int, str | None]:
    """The requested range in hours, or the default and a message saying why it was not used."""
    if raw is None or raw == "":
        return DEFAULT_HOURS, None
    try:
        hours = int(raw)
    except ValueError:
        return DEFAULT_HOURS, f"“{raw[:20]}” is not a whole number of hours; showing the last {DEFAULT_HOURS} hours."
    if not MIN_HOURS <= hours <= MAX_HOURS:
        return DEFAULT_HOURS, (
            f"The range must be {MIN_HOURS} to {MAX_HOURS} hours; showing the last {DEFAULT_HOURS} hours."
        )
    return hours, None


def thin(points: Sequence[dict[str, Any]], fields: Sequence[str], limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` points: consecutive points merged, keeping the last time and each field's peak."""
    if len(points) <= limit:
        return list(points)
    size = math.ceil(len(points) / limit)
    merged = []
    for i in range(0, len(points), size):
        chunk = points[i : i + size]
        merged.append({"time": chunk[-1]["time"], **{f: max(p[f] for p in chunk) for f in fields}})
    return merged


def bucket_for(hours: int) -> str:
    return "minute" if hours <= MINUTE_BUCKETS_UP_TO_HOURS else "hour"


def build_charts(
    *, perf: list[dict[str, Any]], depth: list[dict[str, Any]], since: dt.datetime, until: dt.datetime, bucket: str
) -> list[dict[str, Any]]:
    """The dashboard's four charts over [since, until], from the performance and queue-depth series."""
    depth = thin(depth, ("pending", "in_flight", "ready_services", "live_schedulers"), MAX_LINE_POINTS)
    perf_times = [_time(p["time"]) for p in perf]
    depth_times = [_time(p["time"]) for p in depth]
    window = {"start": since, "end": until}
    return [
        _chart(
            "queue-depth",
            "Queue depth",
            "subtasks",
            line_chart,
            depth_times,
            depth,
            ("pending", "in_flight"),
            {**window, "whole": True},
        ),
        _chart(
            "ready-services",
            "Ready services and live schedulers",
            "count",
            line_chart,
            depth_times,
            depth,
            ("ready_services", "live_schedulers"),
            {**window, "whole": True},
        ),
        _chart(
            "throughput",
            f"Throughput per {bucket}",
            f"attempts / {bucket}",
            bar_chart,
            perf_times,
            perf,
            ("sent", "failed"),
            {**window, "bucket": BUCKET_STEPS[bucket]},
        ),
        _chart(
            "first-send-wait",
            "First-send wait (p50, p95)",
            "seconds",
            line_chart,
            perf_times,
            perf,
            ("wait_p50", "wait_p95"),
            window,
        ),
    ]


def _chart(
    chart_id: str,
    title: str,
    unit: str,
    draw: Callable[..., SafeString],
    times: list[dt.datetime],
    points: list[dict[str, Any]],
    fields: Sequence[str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    series = [Series(name=f, values=[p[f] for p in points], color=COLORS[f]) for f in fields]
    svg = draw(chart_id=chart_id, title=title, times=times, series=series, unit=unit, **extra)
    return {"id": chart_id, "title": title, "svg": svg}


def _time(value: str) -> dt.datetime:
    parsed = parse_datetime(value)
    if parsed is None:  # pragma: no cover - the series always writes ISO-8601
        raise ValueError(f"not an ISO-8601 time: {value!r}")
    return parsed


def open_alerts() -> list[Alert]:
    """Unresolved alerts, the most severe first, then the most recent."""
    rank = Case(
        *(When(severity=s, then=Value(i)) for i, s in enumerate(reversed(Alert.Severity.values))),
        output_field=IntegerField(),
    )
    return list(
        Alert.objects.exclude(status=Alert.Status.RESOLVED)
        .annotate(rank=rank)
        .order_by("rank", "-last_seen_at")[:MAX_ALERTS]
    )


def summary(*, perf: list[dict[str, Any]], now: dt.datetime) -> dict[str, Any]:
    """The figures at the top of the page: the queue now and the range's totals."""
    depth = SystemMonitorService.queue_depth()
    sent = sum(p["sent"] for p in perf)
    failed = sum(p["failed"] for p in perf)
    return {
        "pending": depth.get("pending", 0),
        "in_flight": depth.get("allocated", 0) + depth.get("processing", 0),
        "parked": depth.get("parked", 0),
        "ready_services": SystemMonitorService.ready_services(now=now),
        "sent": sent,
        "failed": failed,
        "success_rate": round(100 * sent / (sent + failed), 2) if sent + failed else None,
    }


def reputation(*, now: dt.datetime) -> dict[str, Any]:
    """Bounce and complaint rates over the reputation window: every active service, the worst owners."""
    config = reputation_config()
    since = window_start(now, config["window_hours"])
    owners = owners_over_limit(since=since, config=config)
    return {
        "window_hours": config["window_hours"],
        "hard_bounce_limit": 100 * config["hard_bounce_rate_limit"],
        "complaint_limit": 100 * config["complaint_rate_limit"],
        "min_sample": config["min_sample"],
        "services": [_in_percent(row) for row in services_table(since=since, config=config)],
        "owners": [_in_percent(row) for row in owners[:MAX_OWNERS_OVER_LIMIT]],
        "owners_total": len(owners),
    }


def _in_percent(row: dict[str, Any]) -> dict[str, Any]:
    def pct(rate: float | None) -> float | None:
        return None if rate is None else 100 * rate

    return {**row, "hard_bounce_pct": pct(row["hard_bounce_rate"]), "complaint_pct": pct(row["complaint_rate"])}


def dashboard_view(request: HttpRequest, *, site: admin.AdminSite) -> TemplateResponse:
    hours, problem = parse_hours(request.GET.get("hours"))
    if problem:
        messages.warning(request, problem)
    now = timezone.now()
    since = now - dt.timedelta(hours=hours)
    bucket = bucket_for(hours)
    perf = performance_series(since=since, until=now, bucket=bucket)
    depth = queue_depth_series(since=since, until=now)
    schedulers = SystemMonitorService.live_schedulers(now=now)
    context = {
        **site.each_context(request),
        "title": "Monitoring dashboard",
        "hours": hours,
        "hour_choices": HOUR_CHOICES,
        "min_hours": MIN_HOURS,
        "max_hours": MAX_HOURS,
        "charts": build_charts(perf=perf, depth=depth, since=since, until=now, bucket=bucket),
        "figures": {**summary(perf=perf, now=now), "live_schedulers": len(schedulers)},
        "alerts": open_alerts(),
        "schedulers": schedulers,
        "services": SystemMonitorService.service_usage(now=now),
        "reputation": reputation(now=now),
    }
    return TemplateResponse(request, "admin/monitoring/dashboard.html", context)
