"""Per-device totals for the current stage: one aggregate query over ``telemetry_windows`` (plus a
narrow one for battery drain), never a query per device.

Which windows count follows fleet_server/rollouts/totals.py (``DeviceTotals.from_windows``):

* windows of the rollout's model starting at or after the stage start;
* a device commanded to install the candidate counts windows run on the candidate counter or at a
  fallback level > 0; any other device counts windows run on the previous counter (any counter when the
  rollout has no previous release).

The exposed set can be 100,000 ids, too many to send to the database. So the query groups by device
*and* by the two flags ``cand`` (candidate window) and ``prev`` (previous-version window); numpy then
keeps, per device, the groups its exposure allows. The sums are a hash aggregate (no sort). Battery
drain pairs consecutive windows (``LAG`` over seq) as ``_drain`` does, in a second query over only the
columns it needs (sorting the wide rows of the sums for the window function cost seconds at 300k
windows); a pair is only formed inside one flag group (a device switching version between two windows
loses that one pair). Input histograms are summed in SQL bin by bin (``input_hist[i]``) for
as many bins as the converter baseline has, only when there is a baseline to compare with.

Install state (OTA status reports for the candidate release) and serving errors (error events) are two
small extra queries over their own tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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

    # The sums: one row per device, version group (and input feature), by hash aggregation (no sort).
    # On PostgreSQL the histogram is parsed into an array once per row in the inner level (OFFSET 0 keeps
    # the planner from inlining it, which would repeat the parse per bin): string_to_array on the JSON
    # text is ~2x cheaper than json ->> per bin (a re-parse per access) or a jsonb cast.
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
    if max_bins and pg:
        # The JSON text without its brackets ("3, 0, 7"), kept only when it has the baseline's bin count
        # for its feature (commas + 1); such windows are concatenated per group and parsed by numpy.
        text = func.btrim(cast(tw.input_hist, Text), "[]")
        want = case(*[(tw.input_feature == f, b) for f, b in bins.items()], else_=None)
        commas = func.length(text) - func.length(func.replace(text, ",", ""))
        base_cols.append(text.label("ht"))
        base_cols.append(and_(text != "", commas + 1 == want).label("hok"))
    elif max_bins:
        base_cols.append(tw.input_hist.label("hj"))
    q = select(*base_cols).where(*stage_windows).subquery().c

    def fsum(expr: Any) -> Any:
        # Summed as doubles (exact for integers below 2**53): PostgreSQL sums bigints as numeric, and
        # converting 100,000 numeric sums to double afterwards cost more than the sums themselves.
        return func.coalesce(func.sum(cast(expr, Float)), 0.0)

    if pg and max_bins:
        hist_sums = [func.count().filter(q.hok), func.string_agg(q.ht, literal_column("','")).filter(q.hok)]
    else:
        hist_sums = [fsum(q.hj[i].as_float()) for i in range(max_bins)]
    group = ([q.device_id] if pg else [q.device_id, q.cand, q.prev]) + ([q.feature] if bins else [])
    sums = select(
        q.device_id,
        literal(1) if pg else q.cand,
        literal(1) if pg else q.prev,
        q.feature if bins else literal(0).label("feature"),
        fsum(q.inferences),
        fsum(q.positives),
        fsum(q.fps),
        fsum(q.wlen),
        fsum(q.active),
        fsum(q.p95w),
        func.coalesce(func.max(q.fell), 0),
        fsum(q.sh_n),
        fsum(q.sh_pos),
        fsum(q.sh_fp),
        fsum(q.sh_p95w),
        *hist_sums,
    ).group_by(*group)
    if pg and max_bins:
        rows, hist_text = _fetch_with_text(conn, sums)
    else:
        rows, hist_text = fetch_columns(conn, sums, pg), None

    # Battery drain: consecutive discharging windows (LAG over seq) per device and version group; a narrow
    # query of its own, so that only these few columns are sorted.
    chg = case((tw.charging, 1), else_=0)
    end = tw.window_start_s + tw.window_len_s
    w = {"partition_by": [tw.device_id] if pg else [tw.device_id, cand, prev], "order_by": tw.seq}
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
            literal(1) if pg else pairs.cand,
            literal(1) if pg else pairs.prev,
            fsum(case((pair, pairs.pct0 - pairs.pct), else_=0.0)),
            fsum(case((pair, (pairs.end - pairs.end0) / 3600.0), else_=0.0)),
        ).group_by(*([pairs.device_id] if pg else [pairs.device_id, pairs.cand, pairs.prev])),
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
        if hist_text is not None:
            _add_parsed_hists(t, hist_text, bins, np.asarray(cols[3], dtype=np.int64), cols[15], keep, all_ri)
        elif bins:
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


def _fetch_with_text(conn: Connection, stmt: Any) -> tuple[list[Any] | None, str]:
    """As ``fetch_columns`` (PostgreSQL), but the last column (histogram text per group) comes back as ONE
    string, the groups' texts joined by commas in row order (NULLs skipped): parsing 100,000 quoted array
    elements would cost more than the numbers in them."""
    sub = stmt.subquery()
    c = list(sub.c)
    row = conn.execute(
        select(*[func.array_agg(x) for x in c[:-1]], func.string_agg(c[-1], literal_column("','")))
    ).one()
    return (None if row[0] is None else list(row[:-1])), row[-1] or ""


def _add_parsed_hists(
    t: DeviceTotals,
    text: str,
    bins: Mapping[int, int],
    features: np.ndarray,
    windows: Sequence[int],
    keep: np.ndarray,
    row_idx: np.ndarray,
) -> None:
    """Per-device input histograms from the groups' concatenated histogram text: group g holds
    ``windows[g]`` windows of ``bins[features[g]]`` numbers each, in group order. One numpy parse and one
    bincount per feature instead of parsing and summing bin by bin in SQL (~3x dearer at 300k windows)."""
    n = t.inferences.shape[0]
    nwin = np.asarray(windows, dtype=np.int64)
    width = np.array([bins.get(int(f), 0) for f in features], dtype=np.int64)
    per_group = nwin * width
    values = np.fromstring(text, dtype=np.float64, sep=",") if text else np.zeros(0)
    if values.size != int(per_group.sum()):
        raise RuntimeError(
            f"input histogram text parsed to {values.size} numbers, {int(per_group.sum())} expected"
        )
    group_of_value = np.repeat(np.arange(len(per_group)), per_group)
    start = np.cumsum(per_group) - per_group
    bin_of_value = (np.arange(values.size) - start[group_of_value]) % np.maximum(width[group_of_value], 1)
    counted = keep[group_of_value]
    for feature, nbins in bins.items():
        sel = counted & (features[group_of_value] == feature)
        if not sel.any():
            continue
        flat = row_idx[group_of_value[sel]] * nbins + bin_of_value[sel]
        sums = np.bincount(flat, weights=values[sel], minlength=n * nbins)
        t.input_hist[feature] = np.rint(sums).astype(np.int64).reshape(n, nbins)


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
