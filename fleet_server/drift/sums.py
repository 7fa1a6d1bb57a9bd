"""Sum a model version's telemetry per cohort in SQL: input histograms bin by bin, counts, battery drain.

Histograms are JSON arrays in ``telemetry_windows.input_hist``; bin ``i`` is summed as ``sum(h[i])``
over the array parsed once per window as ``bigint[]`` (PostgreSQL) / ``sum(json_extract(input_hist,
'$[i]'))`` (SQLite): one pass over the version's windows in the time range, ``GROUP BY hardware class,
feature``, whatever the number of windows. A window counts for feature ``f`` only when its histogram
has exactly the baseline's number of bins for ``f`` (a window from other bins would be compared
bin-by-bin with the wrong edges); windows that do not match are counted and reported, not summed.

Cohorts: ``all`` plus one per hardware class (``hw:<class>``) in the same query; an explicit
:class:`~fleet_server.telemetry_queries.Cohort` (rollout group, tag) gets its own query.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Float, Select, Text, and_, case, cast, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from fleet_server.db.devices import Device
from fleet_server.db.telemetry import TelemetryWindow as W
from fleet_server.telemetry_queries import Cohort

ALL = "all"


@dataclass
class CohortSums:
    devices: int = 0
    windows: int = 0
    inferences: int = 0
    positives: int = 0
    false_positives: int = 0
    mismatched_windows: int = 0  # histogram windows whose bins do not match the baseline
    input_hist: dict[int, list[int]] = field(default_factory=dict)
    # Per device: (% dropped, hours) over consecutive discharging windows; mean drain computed from it.
    drain: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def battery_drain_pct_per_h(self) -> float | None:
        rates = [drop / hours for drop, hours in self.drain.values() if hours > 0]
        return sum(rates) / len(rates) if rates else None

    def add(self, other: CohortSums) -> None:
        self.devices += other.devices
        self.windows += other.windows
        self.inferences += other.inferences
        self.positives += other.positives
        self.false_positives += other.false_positives
        self.mismatched_windows += other.mismatched_windows
        for f, h in other.input_hist.items():
            mine = self.input_hist.setdefault(f, [0] * len(h))
            self.input_hist[f] = [a + b for a, b in zip(mine, h, strict=True)]
        self.drain.update(other.drain)


def _hist_query(
    session: Session,
    scoped: Callable[[Select[Any]], Select[Any]],
    groups: list[Any],
    bins: Mapping[int, int],
) -> Select[Any]:
    """Rows (group..., feature, ok, windows, bin sums...) over windows that carry a histogram.

    ``ok`` = the histogram has the baseline's number of bins for its feature; the sums of the other
    rows are meaningless and only their count is used. One scan of the range either way.
    """
    width = max(bins.values())
    if session.get_bind().dialect.name == "postgresql":
        # Parse each JSON array once, as a bigint[]: ``input_hist ->> i`` re-parses the json text for
        # every bin (about 2x slower on 1.4M windows, see bench/RESULTS-drift.md). OFFSET 0 keeps the
        # planner from inlining the subquery (which would evaluate the cast once per reference).
        arr = cast(func.translate(cast(W.input_hist, Text), "[]", "{}"), ARRAY(BigInteger))
        inner = (
            scoped(select(*(g.label("g") for g in groups), W.input_feature.label("f"), arr.label("h")))
            .where(W.input_hist.is_not(None))
            .offset(0)
            .subquery()
        )
        feature, length = inner.c.f, func.cardinality(inner.c.h)
        keys = [inner.c.g] if groups else []
        expected = case(*((feature == f, n) for f, n in bins.items()), else_=-1)
        ok = case((length == expected, 1), else_=0)
        return (
            select(*keys, feature, ok, func.count(), *(func.sum(inner.c.h[i + 1]) for i in range(width)))
            .where(length > 0)
            .group_by(*keys, feature, ok)
        )
    length = func.json_array_length(W.input_hist)
    expected = case(*((W.input_feature == f, n) for f, n in bins.items()), else_=-1)
    ok = case((length == expected, 1), else_=0)
    sums = (func.sum(cast(W.input_hist[i].as_string(), BigInteger)) for i in range(width))
    return (
        scoped(select(*groups, W.input_feature, ok, func.count(), *sums))
        .where(length > 0)
        .group_by(*groups, W.input_feature, ok)
    )


def cohort_sums(
    session: Session,
    *,
    model_name: str,
    model_version: int,
    since_s: int,
    until_s: int,
    bins: Mapping[int, int],
    cohort: Cohort | None = None,
    by_hardware_class: bool = True,
    battery: bool = False,
) -> dict[str, CohortSums]:
    """Sums for ``all`` and (``by_hardware_class``) each ``hw:<class>``; with ``cohort``, only its name.

    ``bins``: feature -> number of baseline bins. ``battery``: also the per-device drain (one more query).
    """
    explicit = cohort is not None and not cohort.everything
    grouped = by_hardware_class and not explicit
    single = cohort.name() if explicit and cohort is not None else ALL
    # One GROUP BY column (hardware class) or none: a constant group would be a bound parameter, which
    # PostgreSQL cannot match between the select list and GROUP BY.
    groups = [Device.hardware_class] if grouped else []
    base = [
        W.model_name == model_name,
        W.model_version == model_version,
        W.window_start_s >= since_s,
        W.window_start_s < until_s,
    ]

    def scoped(stmt: Select[Any]) -> Select[Any]:
        if explicit:
            assert cohort is not None
            return cohort.apply(stmt.where(*base))
        if grouped:
            stmt = stmt.select_from(W).outerjoin(Device, Device.id == W.device_id)
        return stmt.where(*base)

    def key(row: Sequence[Any]) -> tuple[str, Sequence[Any]]:
        if not grouped:
            return single, row
        g = row[0]
        return (f"hw:{g}" if g is not None else "hw:unknown"), row[1:]

    out: dict[str, CohortSums] = {}
    counts = scoped(
        select(
            *groups,
            func.count(func.distinct(W.device_id)),
            func.count(),
            func.sum(W.inferences),
            func.sum(W.positives),
            func.sum(W.false_positives),
        )
    ).group_by(*groups)
    for row in session.execute(counts):
        k, (devices, windows, inf, pos, fps) = key(row)
        if not windows:
            continue  # no GROUP BY: one all-NULL row when nothing matched
        out[k] = CohortSums(
            devices=int(devices),
            windows=int(windows),
            inferences=int(inf or 0),
            positives=int(pos or 0),
            false_positives=int(fps or 0),
        )

    if bins:
        for row in session.execute(_hist_query(session, scoped, groups, bins)):
            k, (feature, ok, n, *sums) = key(row)
            entry = out.setdefault(k, CohortSums())
            if ok:
                entry.input_hist[int(feature)] = [int(x or 0) for x in sums[: bins[int(feature)]]]
            else:
                entry.mismatched_windows += int(n)

    if battery:
        for row in session.execute(_drain_query(scoped, groups)):
            k, (device_id, drop, hours) = key(row)
            out.setdefault(k, CohortSums()).drain[device_id] = (float(drop or 0.0), float(hours or 0.0))

    if grouped:
        total = CohortSums()
        for entry in out.values():
            total.add(entry)
        out[ALL] = total
    return out


def _drain_query(scoped: Callable[[Select[Any]], Select[Any]], groups: list[Any]) -> Select[Any]:
    """Per device: battery % dropped and hours elapsed between consecutive discharging windows."""
    end_s = W.window_start_s + W.window_len_s
    ordered = (
        scoped(
            select(
                *(g.label("g") for g in groups),
                W.device_id.label("device_id"),
                W.battery_pct.label("pct"),
                W.charging.label("charging"),
                end_s.label("t"),
                func.lag(W.battery_pct).over(partition_by=W.device_id, order_by=W.seq).label("pct0"),
                func.lag(W.charging).over(partition_by=W.device_id, order_by=W.seq).label("charging0"),
                func.lag(end_s).over(partition_by=W.device_id, order_by=W.seq).label("t0"),
            )
        )
        .where(W.battery_pct.is_not(None))
        .subquery()
    )
    valid = and_(
        ordered.c.pct0.is_not(None),
        ordered.c.charging.is_(False),
        ordered.c.charging0.is_(False),
        ordered.c.t > ordered.c.t0,
    )
    keys = [ordered.c.g] if groups else []
    return select(
        *keys,
        ordered.c.device_id,
        func.sum(case((valid, ordered.c.pct0 - ordered.c.pct), else_=0.0)),
        func.sum(case((valid, cast(ordered.c.t - ordered.c.t0, Float) / 3600.0), else_=0.0)),
    ).group_by(*keys, ordered.c.device_id)
