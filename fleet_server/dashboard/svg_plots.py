"""Server-side plots as inline SVG: line charts (axes, ticks, legend) and horizontal bar charts.

No JavaScript and nothing fetched at run time: the page carries the picture. Every text that comes from
data (series names, labels) is XML-escaped here, so callers can mark the result safe for Jinja.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

# Colour-blind-safe palette (Okabe-Ito); series cycle through it.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


@dataclass(frozen=True)
class Series:
    """One line: ``points`` are (x, y) with y None for a gap (no data in that bucket)."""

    name: str
    points: Sequence[tuple[float, float | None]]


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    colour: str | None = None  # default: the palette's first colour


@dataclass(frozen=True)
class Axis:
    label: str = ""
    # Formats a tick value; default: up to 3 significant digits.
    fmt: Callable[[float], str] | None = None
    minimum: float | None = None  # force the axis to include these bounds (e.g. 0 and 100 for %)
    maximum: float | None = None


@dataclass(frozen=True)
class _Frame:
    width: int
    height: int
    left: int = 58
    right: int = 16
    top: int = 14
    bottom: int = 44
    extra_bottom: int = field(default=0)

    @property
    def plot_w(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> float:
        return self.height - self.top - self.bottom - self.extra_bottom


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick positions covering [lo, hi] with about ``target`` steps of 1, 2, 2.5 or 5 x 10^k."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("tick bounds must be finite")
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo < 1e-6 * max(1.0, abs(lo), abs(hi)):  # a flat line: give it a band around its value
        pad = abs(lo) * 0.1 if abs(lo) >= 1e-6 else 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = float(next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw))
    # Multiples of the step (not a running sum: no accumulated floating-point drift); rounding noise can
    # add one tick beyond a bound, never lose one.
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [k * step for k in range(first, last + 1)]


def format_number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.2g}"
    if magnitude >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def time_formatter(span_s: float) -> Callable[[float], str]:
    """Tick labels for Unix-second axes: clock time for short spans, day + time for longer ones."""
    pattern = "%H:%M" if span_s <= 86400 else "%m-%d %H:%M" if span_s <= 7 * 86400 else "%Y-%m-%d"

    def fmt(value: float) -> str:
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime(pattern)

    return fmt


def _time_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Ticks on round clock steps (1 min ... 1 day) so that labels read as times."""
    steps = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 2 * 86400, 7 * 86400)
    span = max(hi - lo, 1.0)
    step = next((s for s in steps if span / s <= target), steps[-1])
    first = math.ceil(lo / step) * step
    ticks = [float(t) for t in range(int(first), int(hi) + 1, step)]
    return ticks or [lo]


def _open_svg(frame: _Frame, title: str, kind: str = "lines") -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot {kind}" '
        f'viewBox="0 0 {frame.width} {frame.height}" width="100%" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]


def _empty(frame: _Frame, title: str, message: str) -> str:
    parts = _open_svg(frame, title)
    parts.append(
        f'<text class="plot-empty" x="{frame.width / 2:.1f}" y="{frame.height / 2:.1f}" '
        f'text-anchor="middle">{escape(message)}</text></svg>'
    )
    return "".join(parts)


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_axis: Axis | None = None,
    y_axis: Axis | None = None,
    time_x: bool = True,
    width: int = 640,
    height: int = 260,
    empty_message: str = "no data in this range",
) -> str:
    """A line chart with markers; ``time_x`` treats x as Unix seconds (UTC clock labels)."""
    x_axis = x_axis or Axis()
    y_axis = y_axis or Axis()
    xs = [x for s in series for x, y in s.points if y is not None and math.isfinite(y)]
    ys = [y for s in series for _, y in s.points if y is not None and math.isfinite(y)]
    legend_rows = math.ceil(len(series) / 4) if len(series) > 1 else 0
    frame = _Frame(width, height, extra_bottom=20 * legend_rows + (8 if legend_rows else 0))
    if not ys:
        return _empty(frame, title, empty_message)
    x_lo, x_hi = min(xs), max(xs)
    if x_lo == x_hi:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo = min(ys) if y_axis.minimum is None else min(y_axis.minimum, min(ys))
    y_hi = max(ys) if y_axis.maximum is None else max(y_axis.maximum, max(ys))
    y_ticks = nice_ticks(y_lo, y_hi)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    x_ticks = _time_ticks(x_lo, x_hi) if time_x else nice_ticks(x_lo, x_hi)
    x_fmt = x_axis.fmt or (time_formatter(x_hi - x_lo) if time_x else format_number)
    y_fmt = y_axis.fmt or format_number

    def px(x: float) -> float:
        return frame.left + (x - x_lo) / (x_hi - x_lo) * frame.plot_w

    def py(y: float) -> float:
        return frame.top + (1 - (y - y_lo) / (y_hi - y_lo)) * frame.plot_h

    parts = _open_svg(frame, title)
    base_y = frame.top + frame.plot_h
    # Grid and y ticks.
    for t in y_ticks:
        y = py(t)
        parts.append(
            f'<line class="grid" x1="{frame.left}" x2="{frame.left + frame.plot_w:.1f}" '
            f'y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(y_fmt(t))}</text>"
        )
    for t in x_ticks:
        if not x_lo <= t <= x_hi:
            continue
        x = px(t)
        parts.append(
            f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{base_y:.1f}" y2="{base_y + 4:.1f}"/>'
            f'<text class="tick" x="{x:.1f}" y="{base_y + 16:.1f}" text-anchor="middle">'
            f"{escape(x_fmt(t))}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{frame.left}" x2="{frame.left + frame.plot_w:.1f}" '
        f'y1="{base_y:.1f}" y2="{base_y:.1f}"/>'
        f'<line class="axis" x1="{frame.left}" x2="{frame.left}" y1="{frame.top}" y2="{base_y:.1f}"/>'
    )
    if x_axis.label:
        parts.append(
            f'<text class="axis-label" x="{frame.left + frame.plot_w / 2:.1f}" y="{base_y + 34:.1f}" '
            f'text-anchor="middle">{escape(x_axis.label)}</text>'
        )
    if y_axis.label:
        cy = frame.top + frame.plot_h / 2
        parts.append(
            f'<text class="axis-label" x="14" y="{cy:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {cy:.1f})">{escape(y_axis.label)}</text>'
        )
    # Lines: a gap (None) breaks the polyline so that missing buckets are not drawn as data.
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        segment: list[str] = []
        segments: list[list[str]] = []
        for x, y in s.points:
            if y is None or not math.isfinite(y):
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{px(x):.1f},{py(y):.1f}")
        if segment:
            segments.append(segment)
        name = escape(s.name)
        for seg in segments:
            parts.append(
                f'<polyline class="series" data-series="{name}" fill="none" stroke="{colour}" '
                f'stroke-width="2" points="{" ".join(seg)}"/>'
            )
            for point in seg:
                cx, cy = point.split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
    # Legend under the x axis, four entries per row.
    if legend_rows:
        for i, s in enumerate(series):
            row, col = divmod(i, 4)
            lx = frame.left + col * (frame.plot_w / 4)
            ly = base_y + 54 + 20 * row
            colour = PALETTE[i % len(PALETTE)]
            parts.append(
                f'<rect x="{lx:.1f}" y="{ly - 9:.1f}" width="12" height="12" fill="{colour}"/>'
                f'<text class="legend" x="{lx + 16:.1f}" y="{ly + 1:.1f}">{escape(s.name[:28])}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    value_fmt: Callable[[float], str] = format_number,
    width: int = 420,
    bar_height: int = 22,
    label_width: int = 120,
    empty_message: str = "nothing to show",
) -> str:
    """Horizontal bars with the value written at each bar's end (labels may be long: versions, classes)."""
    height = max(len(bars), 1) * (bar_height + 8) + 12
    frame = _Frame(width, height, left=label_width, right=56, top=6, bottom=6)
    if not bars:
        return _empty(frame, title, empty_message)
    top = max(max(b.value for b in bars), 0) or 1.0
    parts = _open_svg(frame, title, "bars")
    for i, b in enumerate(bars):
        y = frame.top + i * (bar_height + 8)
        w = max(b.value, 0) / top * frame.plot_w
        colour = b.colour or PALETTE[0]
        label = escape(b.label if len(b.label) <= 18 else b.label[:17] + "…")
        parts.append(
            f'<text class="bar-label" x="{label_width - 8}" y="{y + bar_height * 0.7:.1f}" '
            f'text-anchor="end">{label}</text>'
            f'<rect class="bar" data-label="{escape(b.label)}" x="{label_width}" y="{y}" width="{w:.1f}" '
            f'height="{bar_height}" fill="{colour}" rx="3"/>'
            f'<text class="bar-value" x="{label_width + w + 6:.1f}" y="{y + bar_height * 0.7:.1f}">'
            f"{escape(value_fmt(b.value))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
