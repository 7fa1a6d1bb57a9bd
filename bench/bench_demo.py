"""Wall time of `tinyfleet demo` per step, next to a baseline measured in the same run: the same fleet
(devices, profiles, chain, sample period, window) simulated alone on the embedded broker for the same
number of simulated seconds, with no server, ingest, rollouts or drift evaluation.

    .venv/bin/python bench/bench_demo.py --devices 50 --out out/bench-demo [--write bench/RESULTS-demo.md]

The reference chains and release models are reused from --out when valid (the first run builds them;
their time is reported as its own step). Prints a table; --write appends the figures with the command
and date to the results file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("out/bench-demo"))
    ap.add_argument("--write", type=Path, default=None, help="append the figures to this markdown file")
    args = ap.parse_args()

    from rich.console import Console

    from device_agent.simulator import FleetSimulator, SimulationSettings
    from fleet_server.demo.embedded_broker import EmbeddedBroker
    from fleet_server.demo.orchestrator import PROFILES, DemoOptions, DemoRun

    console = Console(stderr=True)
    options = DemoOptions(out=args.out, devices=args.devices)
    run = DemoRun(options, console)
    t0 = time.monotonic()
    try:
        result = run.run()
    finally:
        run.close()
    demo_wall = time.monotonic() - t0
    rounds = dict(run.round_wall)

    # Baseline: the fleet alone for the same simulated seconds.
    broker = EmbeddedBroker()
    broker.start()
    try:
        settings = SimulationSettings(
            devices=args.devices,
            profiles=list(PROFILES),
            broker_url=broker.url,
            chain_dir=args.out / "reference" / "kws",
            workdir=Path(tempfile.mkdtemp(prefix="bench-demo-fleet-")),
            duration_s=max(result.sim_s, options.window_s),
            sample_period_s=options.sample_period_s,
            window_s=options.window_s,
            device_prefix="base",
            mqtt_protocol="3.1.1",
        )
        sim = FleetSimulator(settings)
        b0 = time.monotonic()
        sim.run()
        base_wall = time.monotonic() - b0
    finally:
        broker.stop()

    lines = [
        "| step | result | wall s | simulated s |",
        "|---|---|---|---|",
    ]
    for p in result.phases:
        lines.append(f"| {p.name} | {p.status} | {p.wall_s:.1f} | {p.sim_s:.0f} |")
    lines.append(
        f"| **whole demo** | {'ok' if result.ok else 'FAILED'} | {demo_wall:.1f} | {result.sim_s:.0f} |"
    )
    lines.append(
        f"| baseline: the fleet alone, same simulated seconds | — | {base_wall:.1f} | {result.sim_s:.0f} |"
    )
    table = "\n".join(lines)
    split = (
        f"Rounds of the demo: devices {rounds['fleet']:.1f} s, waiting for delivery + ingest "
        f"{rounds['sync']:.1f} s, rollout runner / drift ticks {rounds['server']:.1f} s."
    )
    print(table)
    print(split)
    if args.write is not None:
        load = os.getloadavg()
        command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
        with args.write.open("a") as fh:
            fh.write(
                f"\n## {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC — {args.devices} devices\n\n"
                f"Command: `{command}` (1-min load average at the end: {load[0]:.1f}; 2 shared cores; "
                f"soak {options.soak_s} s per stage, sample period {options.sample_period_s} s)\n\n"
                f"{table}\n\n{split}\n"
            )
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
