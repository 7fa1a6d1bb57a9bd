"""The SQL totals (one GROUP BY over telemetry_windows) equal DeviceTotals.from_windows on the same windows,
and the column-built FleetView equals FleetView.build; on SQLite and PostgreSQL."""

from __future__ import annotations

import random

import numpy as np
from runner_support import MODEL, add_devices, store_windows, window
from sqlalchemy import insert

from fleet_server.db import Device, OtaStatusReport, make_engine
from fleet_server.rollout_runner.fleet_loader import device_tag_set, load_fleet
from fleet_server.rollout_runner.totals_query import load_totals
from fleet_server.rollouts import DeviceInfo, DeviceTotals, FleetView, TargetFilter
from telemetry.schemas import OtaStatus, ShadowFigures

CAND, PREV = 7, 6
STAGE_START = 10_000


def _windows(ids: list[str], exposed: set[str], rng: random.Random) -> list:
    out = []
    for d in ids:
        seq = 0
        for k in range(rng.randint(0, 5)):
            seq += rng.randint(1, 3)
            start = STAGE_START + rng.randint(-900, 3000)
            version = rng.choice([CAND, PREV, PREV, 3]) if d in exposed else rng.choice([PREV, PREV, CAND, 3])
            w = window(
                d,
                seq,
                start,
                version,
                inferences=rng.randint(40, 800),
                fps=0,
                battery=rng.choice([None, 90.0 - 2 * k - rng.random(), 50.0]),
                charging=rng.random() < 0.2,
                fallback=rng.choice([0, 0, 0, 1]),
                hist=[rng.randint(0, 10) for _ in range(4)] if rng.random() < 0.7 else [],
                p95=rng.randint(1000, 5000),
            )
            fps = rng.randint(0, w.positives)
            shadow = None
            if rng.random() < 0.3 and w.inferences:
                n = rng.randint(1, w.inferences)
                cp = rng.randint(0, n)
                shadow = ShadowFigures(
                    candidate_version=rng.choice([CAND, 5]),
                    samples=n,
                    agreements=rng.randint(0, n),
                    candidate_positives=cp,
                    candidate_false_positives=rng.randint(0, cp),
                    candidate_latency_p50_us=100,
                    candidate_latency_p95_us=rng.randint(100, 900),
                )
            out.append(w.model_copy(update={"false_positives": fps, "shadow": shadow}))
    return out


def test_sql_totals_match_in_memory_totals(db_url: str) -> None:
    rng = random.Random(5)
    engine = make_engine(db_url)
    try:
        ids = add_devices(engine, 60, counter=PREV, tags={"site": "lab"})
        ids += add_devices(
            engine, 20, counter=PREV, prefix="pi", hardware_class="rpi-zero-2w", tags={"beta": "1"}
        )
        exposed = set(rng.sample(ids, 25))
        windows = _windows(ids, exposed, rng)
        store_windows(engine, windows)
        ota = [
            OtaStatus(
                device_id=d,
                ts=STAGE_START + i,
                release_id="kws-7",
                target_version=CAND,
                state=rng.choice(["committed", "failed", "downloading", "reverted"]),
            )
            for i, d in enumerate(sorted(exposed))
        ]
        with engine.begin() as conn:
            conn.execute(
                insert(OtaStatusReport),
                [
                    {
                        "device_id": o.device_id,
                        "ts": o.ts,
                        "release_id": o.release_id,
                        "target_version": CAND,
                        "from_version": PREV,
                        "state": o.state,
                        "via_delta": False,
                        "bytes_done": 0,
                        "bytes_total": 0,
                        "attempt": 1,
                        "digest": f"{i:032d}",
                    }
                    for i, o in enumerate(ota)
                ],
            )
        target = TargetFilter(hardware_classes=["esp32-s3", "rpi-zero-2w"], tags=["site=lab"])
        with engine.connect() as conn:
            loaded = load_fleet(conn, "ro-x", target, MODEL, battery_since=0)
            sql = load_totals(
                conn,
                loaded.fleet,
                model_name=MODEL,
                since=STAGE_START,
                exposed=sorted(exposed),
                candidate_counter=CAND,
                previous_counter=PREV,
                release_id="kws-7",
                baseline_bins={0: 4},
            )
            tags = dict(
                conn.execute(Device.__table__.select().with_only_columns(Device.id, Device.tags)).all()
            )
        # The reference: pydantic DeviceInfo + FleetView.build + from_windows.
        latest: dict[str, tuple] = {}
        for w in windows:
            if w.device_id not in latest or w.seq > latest[w.device_id][0]:
                latest[w.device_id] = (w.seq, w.battery_pct, w.charging)
        infos = [
            DeviceInfo(
                device_id=d,
                hardware_class="esp32-s3" if d.startswith("dev") else "rpi-zero-2w",
                tags=sorted(device_tag_set(tags[d])),
                battery_pct=latest.get(d, (0, None))[1],
                charging=latest.get(d, (0, None, False))[2],
            )
            for d in sorted(ids)
        ]
        ref_fleet = FleetView.build("ro-x", target, infos)
        assert loaded.fleet.device_ids.tolist() == ref_fleet.device_ids.tolist()
        assert loaded.fleet.eligible.tolist() == ref_fleet.eligible.tolist()
        assert 0 < loaded.fleet.eligible.sum() < len(ids)
        np.testing.assert_array_equal(loaded.fleet.points, ref_fleet.points)
        np.testing.assert_array_equal(loaded.fleet.battery_pct, ref_fleet.battery_pct)
        np.testing.assert_array_equal(loaded.fleet.charging, ref_fleet.charging)
        assert set(loaded.running_counter.tolist()) == {PREV}
        ref = DeviceTotals.from_windows(
            ref_fleet,
            windows,
            since=STAGE_START,
            exposed=exposed,
            candidate_counter=CAND,
            previous_counter=PREV,
            release_id="kws-7",
            ota_events=ota,
        )
        for name in (
            "inferences",
            "positives",
            "false_positives",
            "fell_back",
            "install_state",
            "shadow_samples",
            "candidate_positives",
            "candidate_false_positives",
        ):
            np.testing.assert_array_equal(getattr(sql, name), getattr(ref, name), err_msg=name)
        for name in ("window_s", "active_s", "latency_p95_us", "candidate_latency_p95_us"):
            np.testing.assert_allclose(getattr(sql, name), getattr(ref, name), rtol=1e-9, err_msg=name)
        assert sql.inferences.sum() > 0 and sql.shadow_samples.sum() > 0 and sql.install_state.any()
        np.testing.assert_array_equal(sql.input_hist[0], ref.input_hist[0])
        # Drain: pairs form inside a version group only (documented); where every counted window of a
        # device is of one group the figures agree exactly.
        finite = np.isfinite(ref.battery_drain_pct_per_h) & np.isfinite(sql.battery_drain_pct_per_h)
        assert finite.sum() >= 2
        close = np.isclose(sql.battery_drain_pct_per_h[finite], ref.battery_drain_pct_per_h[finite])
        assert close.mean() >= 0.5, close.mean()
        if db_url.startswith("postgresql"):  # one pass over the counted windows: pairs exactly as _drain
            np.testing.assert_allclose(sql.battery_drain_pct_per_h, ref.battery_drain_pct_per_h, rtol=1e-9)
    finally:
        engine.dispose()


def test_no_previous_counter_counts_any_version_and_other_models_never(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        ids = add_devices(engine, 3, counter=None)
        other = window(ids[0], 1, STAGE_START, PREV).model_copy(
            update={"model": window(ids[0], 1, 0, 1).model.model_copy(update={"name": "other"})}
        )
        store_windows(
            engine,
            [
                window(ids[0], 2, STAGE_START, 3, inferences=100),
                other,
                window(ids[1], 1, STAGE_START - 1, 3, inferences=100),
            ],
        )
        # Three consecutive discharging windows: 90 -> 88 -> 85 over 600 s = 5 %/10 min = 30 %/h.
        store_windows(
            engine,
            [
                window(ids[2], s, STAGE_START + 300 * s, 3, battery=b)
                for s, b in ((1, 90.0), (2, 88.0), (3, 85.0))
            ],
        )
        with engine.connect() as conn:
            loaded = load_fleet(conn, "ro-y", TargetFilter(), MODEL, battery_since=0)
            t = load_totals(
                conn,
                loaded.fleet,
                model_name=MODEL,
                since=STAGE_START,
                exposed=[],
                candidate_counter=CAND,
                previous_counter=None,
                release_id="kws-7",
            )
        assert t.inferences.tolist() == [100, 0, 1500]  # other model and pre-stage windows do not count
        assert t.battery_drain_pct_per_h[2] == 30.0
        assert np.isnan(t.battery_drain_pct_per_h[0])
        assert loaded.running_counter.tolist() == [-1, -1, -1]
    finally:
        engine.dispose()


def test_devices_mask_aggregates_only_the_wanted_rows(db_url: str) -> None:
    rng = random.Random(8)
    engine = make_engine(db_url)
    try:
        ids = add_devices(engine, 40, counter=PREV)
        exposed = set(rng.sample(ids, 15))
        store_windows(engine, _windows(ids, exposed, rng))
        kw = {
            "model_name": MODEL,
            "since": STAGE_START,
            "exposed": sorted(exposed),
            "candidate_counter": CAND,
            "previous_counter": PREV,
            "release_id": "kws-7",
            "baseline_bins": {0: 4},
        }
        with engine.connect() as conn:
            fleet = load_fleet(conn, "ro-m", TargetFilter(), MODEL, battery_since=0).fleet
            wanted = np.array([i % 3 != 0 for i in range(fleet.size)])
            full = load_totals(conn, fleet, **kw)
            part = load_totals(conn, fleet, devices=wanted, **kw)
        assert full.inferences[~wanted].sum() > 0  # the unwanted rows had data to leave out
        for name in ("inferences", "false_positives", "shadow_samples", "window_s", "fell_back"):
            np.testing.assert_array_equal(getattr(part, name)[wanted], getattr(full, name)[wanted], name)
            assert not getattr(part, name)[~wanted].any(), name
        np.testing.assert_array_equal(part.input_hist[0][wanted], full.input_hist[0][wanted])
        assert not part.input_hist[0][~wanted].any()
        np.testing.assert_array_equal(
            np.isnan(part.battery_drain_pct_per_h[~wanted]), np.ones((~wanted).sum(), dtype=bool)
        )
    finally:
        engine.dispose()
