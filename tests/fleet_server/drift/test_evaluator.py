"""Drift evaluation on stored windows: stable vs drifted cohorts, alerts, dedup, resolution, events."""

from __future__ import annotations

import datetime as dt

import pytest
from drift_support import NOW, T0, Fleet, make_baseline, provision_devices, register_release
from sqlalchemy import func, select

from fleet_server.db import AlertRow, DriftSnapshot, RetrainingEvent
from fleet_server.drift import alert_key, evaluate_all, trigger_key
from fleet_server.settings import Settings

BASELINE = make_baseline()


def _setup(session_factory, settings: Settings) -> Fleet:
    with session_factory() as s:
        register_release(s, settings.artifact_dir, BASELINE)
        provision_devices(s, [f"pi-{i}" for i in range(4)], hardware_class="pi-zero-2w")
        provision_devices(s, [f"mcu-{i}" for i in range(4)], hardware_class="esp32-s3")
        s.commit()
    return Fleet(BASELINE)


def test_drifted_cohort_is_significant_and_raises_alert_and_event(
    session_factory, settings: Settings
) -> None:
    fleet = _setup(session_factory, settings)
    fleet.add([f"pi-{i}" for i in range(4)], shift=0.0)
    fleet.add([f"mcu-{i}" for i in range(4)], shift=0.6)
    with session_factory() as s:
        fleet.store(s)
        s.commit()
        summary = evaluate_all(s, settings, NOW)
    by_cohort = {g.cohort: g for g in summary.groups}
    assert set(by_cohort) == {"all", "hw:pi-zero-2w", "hw:esp32-s3"}
    assert by_cohort["hw:pi-zero-2w"].status == "stable"
    assert by_cohort["hw:esp32-s3"].status == "significant"
    assert by_cohort["hw:pi-zero-2w"].alerts_raised == [] and by_cohort["hw:pi-zero-2w"].event_id is None
    drifted = by_cohort["hw:esp32-s3"]
    assert drifted.alerts_raised and drifted.event_created
    with session_factory() as s:
        snap = s.get(DriftSnapshot, drifted.snapshot_id)
        assert snap.max_psi > 0.3 and snap.alert and snap.devices == 4 and snap.windows == 24
        assert {f["feature"] for f in snap.features} == {0, 1, 2, 3}
        alerts = s.scalars(select(AlertRow).where(AlertRow.cohort == "hw:esp32-s3")).all()
        assert [(a.severity, a.code, a.state) for a in alerts] == [("P2", "drift_moderate", "open")]
        assert alerts[0].dedup_key == alert_key("kws", 3, "hw:esp32-s3", "drift_moderate")
        assert len(alerts[0].evidence["features"]) >= 1 and alerts[0].evidence["release_id"] == "kws-3"
        event = s.scalar(select(RetrainingEvent).where(RetrainingEvent.cohort == "hw:esp32-s3"))
        assert event.dedup_key == trigger_key("kws", 3, "hw:esp32-s3")
        assert any("input drift" in r for r in event.reasons) and event.delivery_state == "pending"
        assert not s.scalars(select(AlertRow).where(AlertRow.cohort == "hw:pi-zero-2w")).all()


def test_second_evaluation_refreshes_and_clearing_resolves(session_factory, settings: Settings) -> None:
    fleet = _setup(session_factory, settings)
    fleet.add([f"mcu-{i}" for i in range(4)], shift=0.6)
    with session_factory() as s:
        fleet.store(s)
        s.commit()
        evaluate_all(s, settings, NOW)
        evaluate_all(s, settings, NOW + dt.timedelta(minutes=5))
    with session_factory() as s:
        alerts = s.scalars(select(AlertRow).where(AlertRow.cohort == "hw:esp32-s3")).all()
        assert len(alerts) == 1 and alerts[0].count == 2  # refreshed, not duplicated
        events = s.scalars(select(RetrainingEvent).where(RetrainingEvent.cohort == "hw:esp32-s3")).all()
        assert len(events) == 1 and events[0].count == 2 and events[0].cleared_at is None
    # A day later the cohort reports undrifted inputs only: the alert resolves, the episode ends.
    later_start = T0 + 86_400 + 600
    fleet.add([f"mcu-{i}" for i in range(4)], shift=0.0, start_s=later_start, first_seq=100)
    later = dt.datetime.fromtimestamp(later_start + 86_400 - 600, dt.UTC)
    with session_factory() as s:
        fleet.store(s)
        s.commit()
        summary = evaluate_all(s, settings, later, window_s=86_400 - 1200)
        esp = next(g for g in summary.groups if g.cohort == "hw:esp32-s3")
        assert esp.status == "stable" and esp.alerts_resolved == 1
    with session_factory() as s:
        alert = s.scalars(select(AlertRow).where(AlertRow.cohort == "hw:esp32-s3")).one()
        assert alert.state == "resolved" and alert.resolved_at is not None
        event = s.scalars(select(RetrainingEvent).where(RetrainingEvent.cohort == "hw:esp32-s3")).one()
        assert event.cleared_at is not None
    # Drift returns: a new alert and a new event (a new episode), the resolved ones stay as they were.
    fleet.add([f"mcu-{i}" for i in range(4)], shift=0.6, start_s=int(later.timestamp()), first_seq=200)
    with session_factory() as s:
        fleet.store(s)
        s.commit()
        evaluate_all(s, settings, later + dt.timedelta(hours=2), window_s=3 * 3600)
    with session_factory() as s:
        states = sorted(a.state for a in s.scalars(select(AlertRow).where(AlertRow.cohort == "hw:esp32-s3")))
        assert states == ["open", "resolved"]
        n = s.scalar(
            select(func.count()).select_from(RetrainingEvent).where(RetrainingEvent.cohort == "hw:esp32-s3")
        )
        assert n == 2


def test_version_without_baseline_is_reported_not_judged(session_factory, settings: Settings) -> None:
    with session_factory() as s:
        register_release(s, settings.artifact_dir, None, counter=4)  # no report.json written
        provision_devices(s, ["mcu-0"])
        fleet = Fleet(BASELINE, counter=4)
        fleet.add(["mcu-0"], shift=2.0)
        fleet.store(s)
        s.commit()
        summary = evaluate_all(s, settings, NOW)
        assert [g.status for g in summary.groups] == ["no_baseline"]
        snap = s.scalars(select(DriftSnapshot)).one()
        assert "missing" in snap.note
        assert s.scalar(select(func.count()).select_from(AlertRow)) == 0


def test_thin_data_gives_no_data_and_keeps_alerts(session_factory, settings: Settings) -> None:
    fleet = _setup(session_factory, settings)
    fleet.add(["mcu-0"], shift=0.6, count=1, samples=50)  # 50 samples < drift_min_samples
    with session_factory() as s:
        fleet.store(s)
        s.commit()
        summary = evaluate_all(s, settings, NOW)
        assert {g.status for g in summary.groups} == {"no_data"}
        assert s.scalar(select(func.count()).select_from(AlertRow)) == 0


def test_false_wake_rate_and_battery_trigger_retraining(session_factory, settings: Settings) -> None:
    settings = settings.model_copy(update={"drift_battery_drain_spec_pct_per_h": 2.0})
    fleet = _setup(session_factory, settings)
    # Undrifted inputs, but 2 % false wakes and 5 %/h battery drain.
    fleet.add([f"mcu-{i}" for i in range(4)], false_positives=20, battery=(90.0, 5.0))
    fleet.add([f"pi-{i}" for i in range(4)], false_positives=2, battery=(90.0, 1.0))
    with session_factory() as s:
        fleet.store(s)
        s.commit()
        evaluate_all(s, settings, NOW)
        events = {e.cohort: e for e in s.scalars(select(RetrainingEvent))}
    assert set(events) == {"all", "hw:esp32-s3"}
    reasons = events["hw:esp32-s3"].reasons
    assert any("false-wake rate 2.00%" in r for r in reasons) and any(
        "battery drain 5.0" in r for r in reasons
    )
    assert events["hw:esp32-s3"].evidence["battery_drain_pct_per_h"] == pytest.approx(5.0, abs=0.05)


def test_windows_with_foreign_bins_are_counted_not_summed(session_factory, settings: Settings) -> None:
    fleet = _setup(session_factory, settings)
    fleet.add([f"mcu-{i}" for i in range(4)], shift=0.0)
    good = sum(sum(w.input_hist) for w in fleet.windows)
    # Two windows binned with other edges (5 bins) and one for a feature the baseline does not have.
    odd = [
        w.model_copy(update={"seq": 100 + k, "input_hist": [40, 40, 40, 40, 40]})
        for k, w in enumerate(fleet.windows[:2])
    ]
    odd.append(fleet.windows[2].model_copy(update={"seq": 200, "input_feature": 9}))
    fleet.windows.extend(odd)
    with session_factory() as s:
        fleet.store(s)
        s.commit()
        summary = evaluate_all(s, settings, NOW)
        esp = next(g for g in summary.groups if g.cohort == "hw:esp32-s3")
        snap = s.get(DriftSnapshot, esp.snapshot_id)
    assert esp.status == "stable" and snap.samples == good and snap.windows == 27
    assert snap.note.startswith("3 windows with histogram bins not matching the baseline")


def test_explicit_cohorts_rollout_group_and_tag(session_factory, settings: Settings) -> None:
    from fleet_server.drift import evaluate_version
    from fleet_server.telemetry_queries import Cohort

    with session_factory() as s:
        register_release(s, settings.artifact_dir, BASELINE)
        provision_devices(s, ["mcu-0", "mcu-1"], site="north")
        provision_devices(s, ["mcu-2", "mcu-3"], site="south")
        s.commit()
    fleet = Fleet(BASELINE)
    fleet.add(["mcu-0", "mcu-1"], shift=0.6)
    fleet.add(["mcu-2", "mcu-3"], shift=0.0)
    start, end = dt.datetime.fromtimestamp(T0, dt.UTC), NOW
    with session_factory() as s:
        fleet.store(s)
        s.commit()
        group = Cohort(device_ids=("mcu-1", "mcu-0"))
        [canary] = evaluate_version(
            s,
            settings,
            model_name="kws",
            model_version=3,
            range_start=start,
            range_end=end,
            now=NOW,
            cohort=group,
        )
        [south] = evaluate_version(
            s,
            settings,
            model_name="kws",
            model_version=3,
            range_start=start,
            range_end=end,
            now=NOW,
            cohort=Cohort(tags={"site": "south"}),
        )
        [empty] = evaluate_version(
            s,
            settings,
            model_name="kws",
            model_version=3,
            range_start=start,
            range_end=end,
            now=NOW,
            cohort=Cohort(device_ids=("ghost",)),
        )
        s.commit()
        snap = s.get(DriftSnapshot, canary.snapshot_id)
    assert canary.cohort == group.name() == Cohort(device_ids=("mcu-0", "mcu-1")).name()
    assert canary.cohort.startswith("devices:2:") and canary.status == "significant" and canary.event_created
    assert snap.devices == 2 and snap.windows == 12
    assert (south.cohort, south.status, south.event_id) == ("tag:site=south", "stable", None)
    assert empty.status == "no_data"
