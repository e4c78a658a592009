"""Time-series charts drawn on the server as inline SVG.

The admin dashboard must work on an operator's machine without network
access, so there is no JavaScript chart library and no CDN: each chart is a
small, self-contained ``<svg>`` with its axes, grid, legend and data.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH = 640
HEIGHT = 220
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 30, 28
PLOT_W = WIDTH - LEFT - RIGHT
PLOT_H = HEIGHT - TOP - BOTTOM
X_TICKS = 6


@dataclass(frozen=True)
class Series:
    """One line (or bar layer): a value per time of the chart, None where nothing is known."""

    name: str
    values: Sequence[float | None]
    color: str


def nice_step(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (> 0)."""
    exponent = math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        step = factor * 10.0**exponent
        if step >= value * (1 - 1e-9):
            return step
    raise AssertionError("unreachable")  # pragma: no cover


def y_axis(maximum: float, ticks: int = 4, *, whole: bool = False) -> tuple[float, list[float]]:
    """The top of the y axis and its tick values for data up to ``maximum`` (bottom is 0).

    ``whole``: the data are counts, so no tick falls between two whole numbers.
    """
    if maximum <= 0:
        return (1.0, [0.0, 1.0]) if whole else (0.25, [0.0, 0.25])
    step = nice_step(max(maximum / ticks, 1.0 if whole else 1e-9))
    count = max(1, math.ceil(maximum / step - 1e-9))
    return step * count, [round(step * i, 10) for i in range(count + 1)]


def format_number(value: float) -> str:
    if abs(value) >= 10_000:
        return f"{value / 1000:.4g}k"
    if value == int(value):
        return str(int(value))
    return f"{value:.3g}"


class _Frame:
    """Maps times and values to pixels and draws the axes they share."""

    def __init__(self, *, start: dt.datetime, end: dt.datetime, top: float) -> None:
        self.start = start
        self.span = max((end - start).total_seconds(), 1.0)
        self.top = top

    def x(self, when: dt.datetime) -> float:
        fraction = (when - self.start).total_seconds() / self.span
        return round(LEFT + min(max(fraction, 0.0), 1.0) * PLOT_W, 1)

    def y(self, value: float) -> float:
        return round(TOP + PLOT_H - min(value / self.top, 1.0) * PLOT_H, 1)

    def axes(self, y_ticks: Sequence[float], unit: str) -> SafeString:
        grid = format_html_join(
            "",
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#e3e3e3"/>'
            '<text x="{}" y="{}" text-anchor="end" font-size="10" fill="#666">{}</text>',
            ((LEFT, self.y(v), LEFT + PLOT_W, self.y(v), LEFT - 4, self.y(v) + 3, format_number(v)) for v in y_ticks),
        )
        # Past half a day the same hour appears twice on the axis: add the date.
        long_span = self.span > 12 * 3600
        x_labels = []
        for i in range(X_TICKS):
            when = self.start + dt.timedelta(seconds=self.span * i / (X_TICKS - 1))
            label = timezone.localtime(when).strftime("%m-%d %H:%M" if long_span else "%H:%M")
            anchor = "start" if i == 0 else "end" if i == X_TICKS - 1 else "middle"
            x_labels.append((self.x(when), TOP + PLOT_H + 16, anchor, label))
        x_axis = format_html_join(
            "", '<text x="{}" y="{}" text-anchor="{}" font-size="10" fill="#666">{}</text>', x_labels
        )
        frame = format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/>'
            '<text x="4" y="{}" font-size="10" fill="#666">{}</text>',
            LEFT,
            TOP + PLOT_H,
            LEFT + PLOT_W,
            TOP + PLOT_H,
            TOP - 8,
            unit,
        )
        return grid + x_axis + frame


def _legend(series: Sequence[Series], latest: bool) -> SafeString:
    items = []
    x = LEFT + 40
    for s in series:
        label = s.name
        if latest:
            known = [v for v in s.values if v is not None]
            label = f"{s.name}: {format_number(known[-1])}" if known else f"{s.name}: -"
        items.append((x, s.color, x + 14, label))
        x += 24 + 7 * len(label)
    return format_html_join(
        "",
        '<rect x="{}" y="8" width="10" height="10" fill="{}"/><text x="{}" y="17" font-size="11" fill="#333">{}</text>',
        items,
    )


def _svg(chart_id: str, title: str, body: SafeString, *, empty: bool) -> SafeString:
    return format_html(
        '<svg class="chart" data-chart="{}" data-empty="{}" viewBox="0 0 {} {}" width="100%" '
        'preserveAspectRatio="xMidYMid meet" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">'
        "<title>{}</title>{}</svg>",
        chart_id,
        "true" if empty else "false",
        WIDTH,
        HEIGHT,
        title,
        title,
        body,
    )


def _empty(chart_id: str, title: str, frame: _Frame, unit: str) -> SafeString:
    body = frame.axes([0.0, 1.0], unit) + format_html(
        '<text class="no-data" x="{}" y="{}" text-anchor="middle" font-size="14" fill="#999">No data</text>',
        LEFT + PLOT_W / 2,
        TOP + PLOT_H / 2,
    )
    return _svg(chart_id, title, body, empty=True)


def _has_data(times: Sequence[dt.datetime], series: Sequence[Series]) -> bool:
    return bool(times) and any(v is not None for s in series for v in s.values)


def line_chart(
    *,
    chart_id: str,
    title: str,
    times: Sequence[dt.datetime],
    series: Sequence[Series],
    start: dt.datetime,
    end: dt.datetime,
    unit: str = "",
    whole: bool = False,
) -> SafeString:
    """Lines over [start, end]; a None value breaks its line so gaps stay visible.

    ``whole``: the values are counts (see y_axis).
    """
    if not _has_data(times, series):
        return _empty(chart_id, title, _Frame(start=start, end=end, top=1.0), unit)
    top, ticks = y_axis(max(v for s in series for v in s.values if v is not None), whole=whole)
    frame = _Frame(start=start, end=end, top=top)
    parts = [frame.axes(ticks, unit), _legend(series, latest=True)]
    for s in series:
        for run in _runs(times, s.values):
            points = " ".join(f"{frame.x(t)},{frame.y(v)}" for t, v in run)
            parts.append(
                format_html(
                    '<polyline data-series="{}" points="{}" fill="none" stroke="{}" stroke-width="1.5"/>',
                    s.name,
                    points,
                    s.color,
                )
            )
            if len(run) == 1:  # a lone point draws no line: mark it
                t, v = run[0]
                parts.append(
                    format_html('<circle cx="{}" cy="{}" r="2.5" fill="{}"/>', frame.x(t), frame.y(v), s.color)
                )
    return _svg(chart_id, title, mark_safe("".join(parts)), empty=False)  # noqa: S308 - parts are escaped above


def _runs(times: Sequence[dt.datetime], values: Sequence[float | None]) -> list[list[tuple[dt.datetime, float]]]:
    runs: list[list[tuple[dt.datetime, float]]] = [[]]
    for when, value in zip(times, values, strict=True):
        if value is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((when, value))
    return [run for run in runs if run]


def bar_chart(
    *,
    chart_id: str,
    title: str,
    times: Sequence[dt.datetime],
    series: Sequence[Series],
    start: dt.datetime,
    end: dt.datetime,
    bucket: dt.timedelta,
    unit: str = "",
) -> SafeString:
    """Stacked bars, one per bucket starting at each time; the first series at the bottom.

    Buckets in which nothing happened are zeros, not unknowns: a chart of
    zeros only says "no data" rather than drawing an empty axis.
    """
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(times))]
    if not any(total > 0 for total in totals):
        return _empty(chart_id, title, _Frame(start=start, end=end, top=1.0), unit)
    top, ticks = y_axis(max(totals), whole=True)
    frame = _Frame(start=start, end=end, top=top)
    width = max(round(PLOT_W * bucket.total_seconds() / frame.span * 0.8, 1), 1.0)
    parts = [frame.axes(ticks, unit), _legend(series, latest=False)]
    for i, when in enumerate(times):
        base = 0.0
        label = timezone.localtime(when).strftime("%Y-%m-%d %H:%M")
        for s in series:
            value = s.values[i] or 0
            if value <= 0:
                continue
            y_top, y_bottom = frame.y(base + value), frame.y(base)
            parts.append(
                format_html(
                    '<rect data-series="{}" data-value="{}" x="{}" y="{}" width="{}" height="{}" fill="{}">'
                    "<title>{} {}: {}</title></rect>",
                    s.name,
                    format_number(value),
                    min(frame.x(when), LEFT + PLOT_W - width),
                    y_top,
                    width,
                    round(y_bottom - y_top, 1),
                    s.color,
                    label,
                    s.name,
                    format_number(value),
                )
            )
            base += value
    return _svg(chart_id, title, mark_safe("".join(parts)), empty=False)  # noqa: S308 - parts are escaped above
