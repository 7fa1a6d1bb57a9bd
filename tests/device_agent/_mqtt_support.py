"""Helpers shared by the device_agent MQTT tests: sample messages, link set-up, received-seq analysis."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

_SUPPORT = str(Path(__file__).resolve().parents[1] / "support")
if _SUPPORT not in sys.path:
    sys.path.insert(0, _SUPPORT)

from telemetry.codec import decode  # noqa: E402
from telemetry.schemas import MetricsWindow, ModelRef, Status  # noqa: E402

T0 = 1_790_000_000


def window(device_id: str, seq: int) -> MetricsWindow:
    """A realistic metrics window: 10-bin input histogram, 10-bin output histogram."""
    inferences = 600 + seq % 50
    return MetricsWindow(
        device_id=device_id,
        seq=seq,
        window_start_s=T0 + 60 * seq,
        window_len_s=60,
        duty_cycle=0.0125,
        battery_pct=87.5,
        battery_mv=3912,
        est_battery_life_min=21_000,
        inferences=inferences,
        positives=7,
        false_positives=1,
        latency_p50_us=8_200,
        latency_p95_us=9_900,
        latency_max_us=14_100,
        model=ModelRef(name="kws-micro", version=3, variant="full_int8"),
        input_hist=[3, 10, 40, 90, 150, 150, 90, 40, 10, 3],
        output_hist=[500, 60, 20, 10, 5, 2, 1, 1, 0, 1],
    )


def status(device_id: str) -> Status:
    return Status(device_id=device_id, ts=T0, uptime_s=5, hardware_class="pi4", agent_version="0.1.0")


@dataclass(frozen=True)
class SeqReport:
    received: int
    unique: int
    duplicates: int
    lost: list[int]
    in_order: bool  # first occurrences of each seq come in ascending order


def analyse(payloads: list[bytes], expected: range) -> SeqReport:
    seqs = [decode(p).seq for p in payloads]
    seen: set[int] = set()
    firsts: list[int] = []
    for s in seqs:
        if s not in seen:
            seen.add(s)
            firsts.append(s)
    return SeqReport(
        received=len(seqs),
        unique=len(seen),
        duplicates=len(seqs) - len(seen),
        lost=[s for s in expected if s not in seen],
        in_order=firsts == sorted(firsts),
    )
