"""monitoring.charts: the dashboard's inline SVG charts."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.test import override_settings

from monitoring.charts import (
    BOTTOM,
    HEIGHT,
    LEFT,
    PLOT_W,
    RIGHT,
    TOP,
    WIDTH,
    Series,
    bar_chart,
    format_number,
    line_chart,
    nice_step,
    y_axis,
)

START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
END = START + dt.timedelta(hours=1)
X0, X1 = LEFT, WIDTH - RIGHT  # the plot's left and right edges
Y0, Y1 = HEIGHT - BOTTOM, TOP  # the plot's bottom (value 0) and top (axis maximum)


def minutes(*offsets: int) -> list[dt.datetime]:
    return [START + dt.timedelta(minutes=m) for m in offsets]


def polylines(svg: str) -> list[tuple[str, list[tuple[float, float]]]]:
    found = re.findall(r'<polyline data-series="([^"]+)" points="([^"]*)"', svg)
    return [(name, [tuple(map(float, p.split(","))) for p in points.split()]) for name, points in found]


def bars(svg: str) -> list[dict[str, str]]:
    found = re.findall(r"<rect (data-series[^>]*)>", svg)
    return [dict(re.findall(r'([\w-]+)="([^"]*)"', attrs)) for attrs in found]


@pytest.mark.parametrize(
    ("value", "step"),
    [pytest.param(0.3, 0.5, id="fraction"), (1, 1), (1.1, 2), (3, 5), (7, 10), (30, 50), (250, 500)],
)
def test_nice_step_rounds_up_to_1_2_or_5(value, step):
    assert nice_step(value) == pytest.approx(step)


@pytest.mark.parametrize(
    ("maximum", "top", "ticks"),
    [
        pytest.param(120, 150, [0, 50, 100, 150], id="hundreds"),
        pytest.param(3, 3, [0, 1, 2, 3], id="small-counts"),
        pytest.param(8, 8, [0, 2, 4, 6, 8], id="exact-multiple"),
        pytest.param(0, 0.25, [0, 0.25], id="all-zero"),
    ],
)
def test_y_axis_top_and_ticks(maximum, top, ticks):
    assert y_axis(maximum) == (pytest.approx(top), pytest.approx(ticks))


@pytest.mark.parametrize(
    ("maximum", "top", "ticks"),
    [
        pytest.param(2, 2, [0, 1, 2], id="no-half-steps"),
        pytest.param(3, 3, [0, 1, 2, 3], id="small"),
        pytest.param(120, 150, [0, 50, 100, 150], id="hundreds"),
        pytest.param(0, 1, [0, 1], id="all-zero"),
    ],
)
def test_y_axis_for_counts_has_whole_ticks(maximum, top, ticks):
    assert y_axis(maximum, whole=True) == (top, ticks)


@pytest.mark.parametrize(("value", "text"), [(0, "0"), (12, "12"), (2.5, "2.5"), (0.125, "0.125"), (25000, "25k")])
def test_format_number(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize("draw", [line_chart, bar_chart], ids=["line", "bar"])
@pytest.mark.parametrize(
    ("times", "values"),
    [pytest.param([], [], id="no-points"), pytest.param(minutes(0, 1), [None, None], id="only-unknown-values")],
)
def test_a_series_without_values_renders_a_no_data_chart(draw, times, values):
    extra = {"bucket": dt.timedelta(minutes=1)} if draw is bar_chart else {}
    svg = draw(
        chart_id="c", title="T", times=times, series=[Series("a", values, "#000")], start=START, end=END, **extra
    )

    assert 'data-empty="true"' in svg
    assert ">No data</text>" in svg
    assert "<polyline" not in svg
    assert "<rect data-series" not in svg


def test_line_values_map_to_coordinates_over_the_time_window():
    svg = line_chart(
        chart_id="depth",
        title="Queue depth",
        times=minutes(0, 30, 60),
        series=[Series("pending", [0, 4, 8], "#123456")],
        start=START,
        end=END,
    )

    assert 'data-chart="depth"' in svg
    assert 'data-empty="false"' in svg
    # The axis tops out at 8: 0 sits on the bottom edge, 8 on the top edge, 4 half way.
    assert polylines(svg) == [("pending", [(X0, Y0), ((X0 + X1) / 2, (Y0 + Y1) / 2), (X1, Y1)])]
    assert "pending: 8" in svg  # the legend shows the latest value


def test_line_times_outside_the_window_are_clamped_to_its_edges():
    svg = line_chart(
        chart_id="c",
        title="T",
        times=[START - dt.timedelta(minutes=5), END + dt.timedelta(minutes=5)],
        series=[Series("a", [1, 1], "#000")],
        start=START,
        end=END,
    )

    assert [x for x, _ in polylines(svg)[0][1]] == [X0, X1]


def test_an_unknown_value_breaks_the_line_and_a_lone_point_gets_a_marker():
    svg = line_chart(
        chart_id="wait",
        title="Wait",
        times=minutes(0, 10, 20, 30, 40),
        series=[Series("p50", [2, 2, None, 2, None], "#000")],
        start=START,
        end=END,
    )

    lines = polylines(svg)
    assert [len(points) for _, points in lines] == [2, 1]
    assert svg.count("<circle") == 1


def test_several_lines_share_one_axis():
    svg = line_chart(
        chart_id="c",
        title="T",
        times=minutes(0, 60),
        series=[Series("pending", [10, 10], "#111"), Series("in_flight", [5, 5], "#222")],
        start=START,
        end=END,
    )

    (_, pending), (_, in_flight) = polylines(svg)
    assert pending[0][1] == Y1  # 10 is the top
    assert in_flight[0][1] == (Y0 + Y1) / 2


def test_bars_stack_each_bucket_and_skip_zeros():
    svg = bar_chart(
        chart_id="throughput",
        title="Throughput",
        times=minutes(0, 30),
        series=[Series("sent", [6, 0], "#0a0"), Series("failed", [2, 0], "#a00")],
        start=START,
        end=END,
        bucket=dt.timedelta(minutes=30),
    )

    sent, failed = bars(svg)
    assert (sent["data-series"], sent["data-value"], failed["data-series"], failed["data-value"]) == (
        "sent",
        "6",
        "failed",
        "2",
    )
    assert float(sent["x"]) == X0
    assert float(sent["width"]) == pytest.approx(PLOT_W / 2 * 0.8, abs=0.1)
    # Axis top 8: sent fills 6/8 of the height from the bottom, failed sits on top of it.
    plot_h = Y0 - Y1
    assert float(sent["y"]) + float(sent["height"]) == pytest.approx(Y0)
    assert float(sent["height"]) == pytest.approx(plot_h * 6 / 8, abs=0.1)
    assert float(failed["y"]) == pytest.approx(Y1)
    assert float(failed["y"]) + float(failed["height"]) == pytest.approx(float(sent["y"]), abs=0.1)


def test_all_zero_bars_render_a_no_data_chart():
    svg = bar_chart(
        chart_id="c",
        title="T",
        times=minutes(0, 1),
        series=[Series("sent", [0, 0], "#0a0"), Series("failed", [0, None], "#a00")],
        start=START,
        end=END,
        bucket=dt.timedelta(minutes=1),
    )

    assert 'data-empty="true"' in svg
    assert bars(svg) == []


def test_labels_are_escaped():
    svg = line_chart(
        chart_id='x"><script>',
        title="<b>T</b>",
        times=minutes(0),
        series=[Series("<i>a</i>", [1], "#000")],
        start=START,
        end=END,
    )

    assert "<script>" not in svg
    assert "<b>" not in svg
    assert "<i>" not in svg
    assert "&lt;i&gt;a&lt;/i&gt;" in svg


@override_settings(TIME_ZONE="UTC")
def test_x_axis_labels_show_dates_only_for_ranges_over_a_day():
    short = line_chart(chart_id="c", title="T", times=[], series=[], start=START, end=END)
    long = line_chart(chart_id="c", title="T", times=[], series=[], start=START, end=START + dt.timedelta(hours=72))

    assert ">12:00</text>" in short
    assert ">03-01 12:00</text>" in long
