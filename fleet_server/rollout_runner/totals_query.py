"""Per-device totals for the current stage: one aggregate query over ``telemetry_windows`` (SQLite: plus
one for battery drain), never a query per device.

Which windows count follows fleet_server/rollouts/totals.py (``DeviceTotals.from_windows``):

* windows of the rollout's model starting at or after the stage start;
* a device commanded to install the candidate counts windows run on the candidate counter or at a
  fallback level > 0; any other device counts windows run on the previous counter (any counter when the
  rollout has no previous release).

Only the devices the caller asks for (``devices``: the runner passes the cohort and the control group,
the only ones the gates look at) are aggregated.

PostgreSQL (``_pg_sums``): the wanted ids go along as two array parameters (exposed / not exposed), so
the counted windows are chosen in SQL and grouped by device; sums, battery drain (``LAG`` over seq, as
``_drain`` pairs consecutive battery reports) and the input histograms' text come out of ONE sorted pass
as one row of arrays; numpy parses the histograms (only when there is a converter baseline to compare
with, and only windows with the baseline's bin count).

SQLite (tests, small installs): the query groups by device *and* by the two flags ``cand`` (candidate
window) and ``prev`` (previous-version window); numpy then keeps, per device, the groups its exposure
allows; drain in a second query, a pair only inside one flag group; histograms summed bin by bin.

Install state (OTA status reports for the candidate release) and serving errors (error events) are two
small extra queries over their own tables.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import (
    ARRAY,
    Connection,
    Float,
    String,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
)

from fleet_server.db.telemetry import DeviceEvent, OtaStatusReport, TelemetryWindow
from fleet_server.rollout_runner.columns import fetch_columns
from fleet_server.rollouts.cohorts import FleetView
from fleet_server.rollouts.totals import INSTALL_FAILED, INSTALL_OK, SERVING_ERROR_CODES, DeviceTotals

FAILED_OTA_STATES = ("failed", "reverted")  # as DeviceTotals.from_windows counts them


def load_totals(
    conn: Connection,
    fleet: FleetView,
    *,
    model_name: str,
    since: float,
    exposed: Sequence[str],
    candidate_counter: int,
    previous_counter: int | None,
    release_id: str,
    baseline_bins: Mapping[int, int] | None = None,
    devices: np.ndarray | None = None,
) -> DeviceTotals:
    """Totals aligned with ``fleet``'s rows. ``baseline_bins``: feature -> bin count to sum (None: none).
    ``devices``: bool mask of the rows whose totals are wanted (the gates look at the cohort and the
    control group only); other rows stay zero. None: every row."""
    n = fleet.size
    t = DeviceTotals.empty(n)
    idx = fleet.index()
    exposed_mask = fleet.mask_of(exposed)
    wanted = np.ones(n, dtype=bool) if devices is None else np.asarray(devices, dtype=bool)
    tw = TelemetryWindow
    since_i = int(np.ceil(since))
    pg = conn.dialect.name == "postgresql"
    cand = case((or_(tw.model_version == candidate_counter, tw.fallback_level > 0), 1), else_=0)
    prev = (
        literal(1) if previous_counter is None else case((tw.model_version == previous_counter, 1), else_=0)
    )
    stage_windows: tuple[Any, ...]
    if pg:
        # Which windows count is decided in SQL: the wanted devices' ids go along as two arrays (exposed:
        # candidate windows; the others: previous-version windows), so only the counted windows of the
        # devices the gates look at are aggregated (at the 50 % stage about half of them), one group per
        # device. ``= ANY`` of an array parameter is a hash lookup in PostgreSQL >= 14.
        ids = fleet.device_ids
        exp_ids = bindparam("exp_ids", ids[wanted & exposed_mask].tolist(), type_=ARRAY(String))
        other_ids = bindparam("other_ids", ids[wanted & ~exposed_mask].tolist(), type_=ARRAY(String))
        counted = or_(
            and_(tw.device_id == any_(exp_ids), cand == 1),
            and_(tw.device_id == any_(other_ids), prev == 1),
        )
        stage_windows = (tw.window_start_s >= since_i, tw.model_name == model_name, counted)
        cand = prev = literal(1)  # every aggregated window counts: kept() below keeps every group
    else:
        stage_windows = (tw.window_start_s >= since_i, tw.model_name == model_name, or_(cand == 1, prev == 1))
    has_shadow = and_(tw.shadow_candidate_version == candidate_counter, tw.shadow_samples.is_not(None))
    bins = {f: b for f, b in (baseline_bins or {}).items() if b > 0}
    max_bins = max(bins.values(), default=0)
    if pg:  # sorts / hash tables of 300k windows do not fit the default 4 MB work_mem (they spill)
        conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")

    # The sums: one row per device (SQLite: per device, version group and input feature).
    base_cols = [
        tw.device_id.label("device_id"),
        cand.label("cand"),
        prev.label("prev"),
        tw.input_feature.label("feature"),
        tw.inferences.label("inferences"),
        tw.positives.label("positives"),
        tw.false_positives.label("fps"),
        tw.window_len_s.label("wlen"),
        (tw.duty_cycle * tw.window_len_s).label("active"),
        (tw.latency_p95_us * tw.inferences).label("p95w"),
        case((tw.fallback_level > 0, 1), else_=0).label("fell"),
        case((has_shadow, tw.shadow_samples), else_=0).label("sh_n"),
        case((has_shadow, tw.shadow_candidate_positives), else_=0).label("sh_pos"),
        case((has_shadow, tw.shadow_candidate_false_positives), else_=0).label("sh_fp"),
        case((has_shadow, tw.shadow_candidate_latency_p95_us * tw.shadow_samples), else_=0).label("sh_p95w"),
    ]

    def fsum(expr: Any) -> Any:
        # Summed as doubles (exact for integers below 2**53): PostgreSQL sums bigints as numeric, and
        # converting 100,000 numeric sums to double afterwards cost more than the sums themselves.
        return func.coalesce(func.sum(cast(expr, Float)), 0.0)

    chg = case((tw.charging, 1), else_=0)
    end = tw.window_start_s + tw.window_len_s
    hists: dict[int, tuple[Any, str]] = {}  # PostgreSQL: feature -> (windows per group, joined text)
    if pg:
        rows, drain_rows, hists = _pg_sums(conn, base_cols, stage_windows, bins, fsum, chg, end)
    else:
        if max_bins:
            base_cols.append(tw.input_hist.label("hj"))
        q = select(*base_cols).where(*stage_windows).subquery().c
        group = [q.device_id, q.cand, q.prev] + ([q.feature] if bins else [])
        sums = select(
            q.device_id,
            q.cand,
            q.prev,
            q.feature if bins else literal(0).label("feature"),
            *[fsum(c) for c in (q.inferences, q.positives, q.fps, q.wlen, q.active, q.p95w)],
            func.coalesce(func.max(q.fell), 0),
            *[fsum(c) for c in (q.sh_n, q.sh_pos, q.sh_fp, q.sh_p95w)],
            *[fsum(q.hj[i].as_float()) for i in range(max_bins)],
        ).group_by(*group)
        rows = fetch_columns(conn, sums, pg)
        # Battery drain: consecutive discharging windows (LAG over seq) per device and version group.
        w = {"partition_by": [tw.device_id, cand, prev], "order_by": tw.seq}
        pairs = (
            select(
                tw.device_id.label("device_id"),
                cand.label("cand"),
                prev.label("prev"),
                tw.battery_pct.label("pct"),
                chg.label("chg"),
                end.label("end"),
                func.lag(tw.battery_pct).over(**w).label("pct0"),
                func.lag(chg).over(**w).label("chg0"),
                func.lag(end).over(**w).label("end0"),
            )
            .where(*stage_windows, tw.battery_pct.is_not(None))
            .subquery()
            .c
        )
        pair = and_(pairs.pct0.is_not(None), pairs.chg == 0, pairs.chg0 == 0, pairs.end > pairs.end0)
        drain_rows = fetch_columns(
            conn,
            select(
                pairs.device_id,
                pairs.cand,
                pairs.prev,
                fsum(case((pair, pairs.pct0 - pairs.pct), else_=0.0)),
                fsum(case((pair, (pairs.end - pairs.end0) / 3600.0), else_=0.0)),
            ).group_by(pairs.device_id, pairs.cand, pairs.prev),
            pg,
        )

    def kept(cols: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Which group rows count for their device (by its exposure), and each group row's device row."""
        count = len(cols[0])
        row_idx = np.fromiter((idx.get(d, -1) for d in cols[0]), dtype=np.int64, count=count)
        known = row_idx >= 0
        flag_cand = np.asarray(cols[1], dtype=np.int64) == 1
        flag_prev = np.asarray(cols[2], dtype=np.int64) == 1
        exposed_row = np.zeros(count, dtype=bool)
        exposed_row[known] = exposed_mask[row_idx[known]]
        keep = known & np.where(exposed_row, flag_cand, flag_prev)
        keep[known] &= wanted[row_idx[known]]
        return keep, row_idx

    p95w = np.zeros(n)
    sh_p95w = np.zeros(n)
    drop = np.zeros(n)
    hours = np.zeros(n)
    if rows:
        cols = rows
        keep, all_ri = kept(rows)
        ri = all_ri[keep]

        def col(k: int, dtype: type = np.float64) -> np.ndarray:
            return np.asarray(cols[k], dtype=dtype)[keep]

        np.add.at(t.inferences, ri, col(4, np.int64))
        np.add.at(t.positives, ri, col(5, np.int64))
        np.add.at(t.false_positives, ri, col(6, np.int64))
        np.add.at(t.window_s, ri, col(7))
        np.add.at(t.active_s, ri, col(8))
        np.add.at(p95w, ri, col(9))
        fell = np.zeros(n, dtype=np.int64)
        np.add.at(fell, ri, col(10, np.int64))
        t.fell_back = fell > 0
        np.add.at(t.shadow_samples, ri, col(11, np.int64))
        np.add.at(t.candidate_positives, ri, col(12, np.int64))
        np.add.at(t.candidate_false_positives, ri, col(13, np.int64))
        np.add.at(sh_p95w, ri, col(14))
        for feature, (nwin, text) in hists.items():
            _add_parsed_hist(t, feature, bins[feature], text, np.asarray(nwin, dtype=np.int64), keep, all_ri)
        if bins and not pg:
            features = col(3, np.int64)
            for feature, nbins in bins.items():
                sel = features == feature
                if not sel.any():
                    continue
                values = np.stack([col(15 + k) for k in range(nbins)], axis=1)[sel]
                hist = t.input_hist[feature] = np.zeros((n, nbins), dtype=np.int64)
                np.add.at(hist, ri[sel], np.rint(values).astype(np.int64))
    if drain_rows:
        dcols = drain_rows
        dkeep, dri = kept(drain_rows)
        dri = dri[dkeep]
        np.add.at(drop, dri, np.asarray(dcols[3], dtype=np.float64)[dkeep])
        np.add.at(hours, dri, np.asarray(dcols[4], dtype=np.float64)[dkeep])
    with np.errstate(invalid="ignore", divide="ignore"):
        t.latency_p95_us = np.where(t.inferences > 0, p95w / np.maximum(t.inferences, 1), 0.0)
        t.candidate_latency_p95_us = np.where(
            t.shadow_samples > 0, sh_p95w / np.maximum(t.shadow_samples, 1), 0.0
        )
        t.battery_drain_pct_per_h = np.where(hours > 0, drop / np.where(hours > 0, hours, 1.0), np.nan)
    _install_states(conn, t, idx, release_id)
    _serving_errors(conn, t, idx, since_i)
    if devices is not None:  # the side queries are per table, not per device: drop what was not asked
        t.install_state[~wanted] = 0
        t.serving_errors[~wanted] = 0
    return t


def _pg_sums(
    conn: Connection,
    base_cols: list[Any],
    stage_windows: tuple[Any, ...],
    bins: Mapping[int, int],
    fsum: Callable[[Any], Any],
    chg: Any,
    end: Any,
) -> tuple[list[Any] | None, list[Any] | None, dict[int, tuple[Any, str]]]:
    """PostgreSQL: the sums, the battery drain and the histogram texts in ONE pass over the counted
    windows, grouped by device. The drain's LAG runs over (device, battery reported) ordered by seq, a sort
    the per-device grouping reuses (two queries sorted the windows twice). Histograms: each window's JSON
    text without brackets ("3, 0, 7"), kept only with the baseline's bin count for its feature (commas + 1),
    concatenated per device and then over all devices (``string_agg`` in the same aggregate as the other
    columns' ``array_agg``, so in the same row order) and parsed by numpy: parsing and summing in SQL bin
    by bin cost ~3x more at 300k windows.

    Returns (sum columns as load_totals lays them out, drain columns, feature -> (windows per group,
    text))."""
    tw = TelemetryWindow
    # Sorted and grouped by the id in the "C" collation (byte order): the database's default collation
    # compares through strcoll, a third of the sort's time over 300k windows.
    device = tw.device_id.collate("C")
    w = {"partition_by": [device, tw.battery_pct.is_(None)], "order_by": tw.seq}
    cols = [
        device.label("device_c"),
        *base_cols,
        tw.battery_pct.label("pct"),
        chg.label("chg"),
        end.label("end"),
        func.lag(tw.battery_pct).over(**w).label("pct0"),
        # The previous window's end and charging flag in one LAG (2 * end + charging): each window function
        # over 300k rows costs ~0.1 s.
        func.lag(end * 2 + chg).over(**w).label("enc0"),
    ]
    if bins:
        text = func.btrim(cast(tw.input_hist, Text), "[]")
        commas = func.length(text) - func.length(func.replace(text, ",", ""))
        cols.append(text.label("ht"))
        cols.append(commas.label("hc"))
    q = select(*cols).where(*stage_windows).subquery().c
    # Both discharging (the previous one: enc0 even) and the later one ending later (2 end > 2 end0).
    pair = and_(q.pct.is_not(None), q.pct0.is_not(None), q.chg == 0, q.enc0 % 2 == 0, q.end * 2 > q.enc0)
    per_feature = []
    for feature, nbins in bins.items():
        ok = and_(q.feature == feature, q.ht != "", q.hc == nbins - 1)
        per_feature += [func.count().filter(ok), func.string_agg(q.ht, literal_column("','")).filter(ok)]
    sums = (
        select(
            q.device_c,
            literal(1).label("cand"),  # every aggregated window counts (chosen in SQL)
            literal(1).label("prev"),
            literal(0).label("feature"),
            *[fsum(c) for c in (q.inferences, q.positives, q.fps, q.wlen, q.active, q.p95w)],
            func.coalesce(func.max(q.fell), 0).label("fell"),
            *[fsum(c) for c in (q.sh_n, q.sh_pos, q.sh_fp, q.sh_p95w)],
            fsum(case((pair, q.pct0 - q.pct), else_=0.0)),
            fsum(case((pair, (q.end * 2 - q.enc0) / 7200.0), else_=0.0)),
            *per_feature,
        )
        .group_by(q.device_c)
        .subquery()
    )
    c = list(sums.c)
    texts = c[18::2] if bins else []
    arrays = [x for x in c if not any(x is t for t in texts)]
    row = conn.execute(
        select(
            *[func.array_agg(x) for x in arrays], *[func.string_agg(x, literal_column("','")) for x in texts]
        )
    ).one()
    if row[0] is None:
        return None, None, {}
    out = list(row[: len(arrays)])
    joined = list(row[len(arrays) :])
    hists = {f: (out[17 + k], joined[k] or "") for k, f in enumerate(bins)}
    return out[:15], [*out[:3], out[15], out[16]], hists


def _parse_numbers(text: str, dtype: type) -> np.ndarray | None:
    """Comma-separated numbers; None when the text does not parse to its end (numpy warns, or raises in
    newer versions, where it stops)."""
    if not text:
        return np.zeros(0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            return np.fromstring(text, dtype=dtype, sep=",")
        except (DeprecationWarning, ValueError):
            return None


def _add_parsed_hist(
    t: DeviceTotals,
    feature: int,
    nbins: int,
    text: str,
    nwin: np.ndarray,
    keep: np.ndarray,
    row_idx: np.ndarray,
) -> None:
    """Add one feature's histograms parsed from ``text``: group g contributed ``nwin[g]`` windows of
    ``nbins`` numbers each, in group order; only groups in ``keep`` count, onto device row ``row_idx[g]``."""
    expected = int(nwin.sum()) * nbins
    # Counts are integers (the ingest schema says so): the integer parser is ~5x faster than the float one;
    # anything else ("3.0") makes it stop early, and the float parser takes over.
    values = _parse_numbers(text, np.int64)
    if values is None or values.size != expected:
        values = _parse_numbers(text, np.float64)
    if values is None or values.size != expected:
        raise RuntimeError(f"input histogram text of feature {feature} parsed to {values.size} numbers")
    if not (keep & (nwin > 0)).any():
        return
    window_group = np.repeat(np.arange(nwin.size), nwin)
    counted = keep[window_group]
    rows = row_idx[window_group[counted]]
    matrix = values.reshape(-1, nbins)[counted]
    flat = (rows[:, None] * nbins + np.arange(nbins)).ravel()
    sums = np.bincount(flat, weights=matrix.ravel(), minlength=t.inferences.shape[0] * nbins)
    t.input_hist[feature] = np.rint(sums).astype(np.int64).reshape(-1, nbins)


def _install_states(conn: Connection, t: DeviceTotals, idx: Mapping[str, int], release_id: str) -> None:
    """The newest finished OTA state per device for the candidate release (committed / failed / reverted)."""
    o = OtaStatusReport
    finished = (o.release_id == release_id, o.state.in_(("committed", *FAILED_OTA_STATES)))
    if conn.dialect.name == "postgresql":  # one row per device, fetched as two arrays
        newest = select(o.device_id, o.state).where(*finished).distinct(o.device_id)
        cols = fetch_columns(conn, newest.order_by(o.device_id, o.ts.desc(), o.id.desc()), True)
        pairs: Any = zip(*cols, strict=True) if cols else ()
    else:  # in time order: the newest state of a device is written last
        pairs = conn.execute(select(o.device_id, o.state).where(*finished).order_by(o.ts, o.id))
    for device_id, state in pairs:
        i = idx.get(device_id)
        if i is not None:
            t.install_state[i] = INSTALL_OK if state == "committed" else INSTALL_FAILED


def _serving_errors(conn: Connection, t: DeviceTotals, idx: Mapping[str, int], since: int) -> None:
    e = DeviceEvent
    stmt = select(e.device_id, e.body).where(e.type == "error", e.ts >= since)
    for device_id, body in conn.execute(stmt):
        i = idx.get(device_id)
        if i is None or not isinstance(body, dict):
            continue
        if body.get("code") in SERVING_ERROR_CODES or body.get("component") == "runtime":
            t.serving_errors[i] += 1
