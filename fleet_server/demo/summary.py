"""The demo's closing tables (Rich)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

_STYLE = {"ok": "green", "failed": "red", "skipped": "yellow", "pending": "dim"}


def phases_table(result: Any) -> Table:
    t = Table(title=f"TinyFleet demo: {result.wall_s:.0f} s wall, {result.sim_s:.0f} simulated s")
    for col in ("step", "result", "wall s", "simulated s", "what happened"):
        t.add_column(col, justify="right" if col.endswith(" s") else "left")
    for p in result.phases:
        style = _STYLE.get(p.status, "")
        t.add_row(p.name, f"[{style}]{p.status}[/]", f"{p.wall_s:.1f}", f"{p.sim_s:.0f}", p.detail)
    return t


def outcomes_table(result: Any) -> Table | None:
    """The figures the demo is about: exposure of the bad release, the alert, the fallback."""
    rows: list[tuple[str, str]] = []
    good = result.phase("release + rollout to 100 %")
    if good is not None and good.figures:
        f = good.figures
        rows.append(("good release", f"{f.get('release')}: {f.get('status')}, "
                     f"{f.get('devices_on_release')}/{f.get('devices')} devices on it"))  # fmt: skip
    bad = result.phase("bad release stopped at canary")
    if bad is not None and bad.figures:
        f = bad.figures
        rows.append(
            ("bad release", f"{f.get('release')}: {f.get('status')} at stage {f.get('stopped_at_stage')}")
        )
        rows.append(("devices ever exposed", f"{f.get('ever_exposed')} (canary cohort "
                     f"{f.get('canary_cohort')}; "
                     f"{f.get('ran_bad_model')} ran it, {f.get('installed')} installed it)"))  # fmt: skip
        rows.append(("back on the previous release", str(f.get("back_on_previous"))))
        ttr = (f.get("summary") or {}).get("time_to_recovery_s")
        if ttr is not None:
            rows.append(("time to recovery (simulated)", f"{ttr:.0f} s"))
    drift = result.phase("input drift -> PSI alert")
    if drift is not None and drift.figures:
        f = drift.figures
        alerts = f.get("alerts") or []
        rows.append(
            (
                "drift alerts",
                ", ".join(f"{a['severity']} {a['code']} [{a['cohort']}]" for a in alerts) or "none",
            )
        )
        rows.append(("retraining events", str(len(f.get("events") or []))))
    low = result.phase("low battery -> fallback and back")
    if low is not None and low.figures:
        f = low.figures
        rows.append(("low-battery cohort", f"{len(f.get('cohort', []))} devices: "
                     f"{len(f.get('fell_back', []))} fell "
                     f"back, {len(f.get('stepped_up', []))} stepped back up"))  # fmt: skip
    if not rows:
        return None
    t = Table(title="outcomes")
    t.add_column("what")
    t.add_column("result")
    for a, b in rows:
        t.add_row(a, b)
    return t
