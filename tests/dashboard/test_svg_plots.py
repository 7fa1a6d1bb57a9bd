"""The SVG plotting module: tick choice, scaling, gaps, escaping, empty data."""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from fleet_server.dashboard.svg_plots import Axis, Bar, Series, bar_chart, line_chart, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


@given(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(0, 1e6, allow_nan=False),
)
def test_ticks_cover_the_range_with_round_even_steps(lo: float, span: float) -> None:
    hi = lo + span
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo + 1e-9 * max(1.0, abs(lo)) and ticks[-1] >= hi - 1e-9 * max(1.0, abs(hi))
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(ticks) <= 13
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 2.5, 5, 10))
    assert max(steps) - min(steps) <= 1e-6 * max(1.0, step)


def test_line_chart_scales_points_into_the_frame_and_breaks_at_gaps() -> None:
    svg = line_chart(
        [Series("a", [(0, 0.0), (60, 10.0), (120, None), (180, 5.0)]), Series("b", [(0, 2.0), (180, 4.0)])],
        title="t",
        time_x=False,
    )
    root = ET.fromstring(svg)
    lines = root.findall(f"{SVG}polyline")
    # "a" has a gap: two polylines; "b" one.
    assert [p.get("data-series") for p in lines] == ["a", "a", "b"]
    xs = [float(pt.split(",")[0]) for p in lines for pt in p.get("points", "").split()]
    ys = [float(pt.split(",")[1]) for p in lines for pt in p.get("points", "").split()]
    width, height = (float(v) for v in root.get("viewBox", "").split()[2:])
    assert min(xs) >= 0 and max(xs) <= width and min(ys) >= 0 and max(ys) <= height
    a_first = [tuple(map(float, pt.split(","))) for pt in lines[0].get("points", "").split()]
    assert a_first[0][1] > a_first[1][1]  # 0 is drawn below 10 (SVG y grows downwards)
    assert len(root.findall(f"{SVG}circle")) == 5
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "legend"] == ["a", "b"]


def test_text_from_data_is_escaped() -> None:
    evil = '</svg><script>alert(1)</script>"'
    svg = line_chart([Series(evil, [(0, 1.0), (1, 2.0)]), Series("x", [(0, 1.0)])], title=evil, time_x=False)
    assert "<script>" not in svg
    ET.fromstring(svg)  # still well-formed XML
    bars = bar_chart([Bar(evil, 3)], title=evil)
    assert "<script>" not in bars
    ET.fromstring(bars)


def test_empty_and_all_gap_series_show_a_message() -> None:
    for series in ([], [Series("a", [(0, None), (1, None)])]):
        svg = line_chart(series, title="t", empty_message="nothing here")
        assert "nothing here" in svg and "<polyline" not in svg
    assert "none yet" in bar_chart([], title="t", empty_message="none yet")


def test_axis_bounds_are_included() -> None:
    svg = line_chart([Series("a", [(0, 40.0), (1, 60.0)])], title="t", y_axis=Axis(minimum=0, maximum=100))
    ticks = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text") if t.get("class") == "tick"]
    assert "0" in ticks and "100" in ticks


def test_time_axis_labels_are_clock_times() -> None:
    start = 1_795_000_000 - 1_795_000_000 % 3600
    svg = line_chart([Series("a", [(start + 600 * i, float(i)) for i in range(13)])], title="t")
    labels = [t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}text") if t.get("class") == "tick"]
    assert any(re.fullmatch(r"\d\d:\d\d", label) for label in labels)


def test_bar_lengths_are_proportional() -> None:
    root = ET.fromstring(bar_chart([Bar("a", 10), Bar("b", 5), Bar("c", 0)], title="t"))
    widths = [float(r.get("width", "0")) for r in root.iter(f"{SVG}rect")]
    assert widths[0] == 2 * widths[1] and widths[2] == 0
    values = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "bar-value"]
    assert values == ["10", "5", "0"]
