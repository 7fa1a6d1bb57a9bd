"""`tinyfleet simulate`: many simulated devices, each a real agent with its own MQTT connection, in one
process on simulated time; writes a results JSON for tests and benchmarks.

    tinyfleet simulate --devices 50 --profiles pi-zero-2w,esp32-s3 --broker mqtt://127.0.0.1:1883 \
        --chain-dir out/demo/reference/digits --duration 3600 --sim-speed 600 --results out/sim.json

Scenarios (device_agent/scenarios.py), repeatable: ``--scenario drift --scenario low-battery``; each
writes its section under ``scenarios`` in the results. ``broker-outage`` needs a broker the command can
stop: ``--broker embedded`` runs the demo's embedded MQTT broker (amqtt) in this process.

Exit codes: 0 done (every device's buffer drained), 1 some device did not deliver everything before
the drain timeout, 2 bad option (one line naming it). Imports device_agent only (no TensorFlow).
Wire into fleet_server/cli/main.py with ``app.command("simulate")(simulate_command)``.
"""

from __future__ import annotations

import logging
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

_err = Console(stderr=True)

# SimulationSettings field -> the option that sets it, for error messages.
_OPTION_OF = {
    "devices": "--devices",
    "profiles": "--profiles",
    "broker_url": "--broker",
    "chain_dir": "--chain-dir",
    "workdir": "--workdir",
    "duration_s": "--duration",
    "sim_speed": "--sim-speed",
    "sample_period_s": "--sample-period",
    "window_s": "--window",
    "device_prefix": "--prefix",
    "seed": "--seed",
}


def _fail(message: str) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {' '.join(message.split())}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def simulate_command(
    devices: Annotated[int, typer.Option(help="Number of simulated devices.")] = 10,
    profiles: Annotated[
        str, typer.Option(help="Comma-separated hardware profiles, assigned round-robin.")
    ] = ("pi-zero-2w"),
    broker: Annotated[
        str, typer.Option(help="MQTT broker URL, or 'embedded' for an in-process broker.")
    ] = "mqtt://127.0.0.1:1883",
    chain_dir: Annotated[
        Path, typer.Option(help="Fallback chain every device starts with (chain.json).")
    ] = Path("out/demo/reference/digits"),
    duration: Annotated[float, typer.Option(help="Simulated seconds to run.")] = 600.0,
    sim_speed: Annotated[
        float | None, typer.Option(help="Simulated seconds per wall second; default: as fast as possible.")
    ] = None,
    sample_period: Annotated[float, typer.Option(help="Seconds between wakes (duty cycle).")] = 1.0,
    window: Annotated[float, typer.Option(help="Seconds per metrics window.")] = 60.0,
    workdir: Annotated[
        Path | None, typer.Option(help="Device state directories; default: a new temporary directory.")
    ] = None,
    prefix: Annotated[str, typer.Option(help="Device id prefix: <prefix>-0000, <prefix>-0001, ...")] = "sim",
    seed: Annotated[int, typer.Option(help="Sensor stream seed.")] = 0,
    results: Annotated[Path, typer.Option(help="Where to write the results JSON.")] = Path("simulation.json"),
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="Scripted scenario (repeatable): bad-model, drift, low-battery, broker-outage, device-churn."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Agent log level (stderr).")] = "warning",
) -> None:
    """Run N simulated devices as real agents against an MQTT broker and write per-device counters."""
    from pydantic import ValidationError

    from device_agent.model_manager import ModelChain
    from device_agent.runtime.base import ModelLoadError
    from device_agent.scenarios import SCENARIOS, make_scenarios
    from device_agent.simulator import FleetSimulator, SimulationSettings, write_results

    names = list(scenario or [])
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise _fail(f"--scenario: unknown {', '.join(unknown)}; known: {', '.join(sorted(SCENARIOS))}")
    embedded = None
    if broker == "embedded":
        from fleet_server.demo.embedded_broker import EmbeddedBroker

        embedded = EmbeddedBroker()
        broker = embedded.url
    elif "broker-outage" in names:
        raise _fail("--scenario broker-outage needs --broker embedded (a broker this command can stop)")

    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise _fail(f"--log-level must be debug, info, warning or error, got {log_level!r}")
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = SimulationSettings(
            devices=devices,
            profiles=[p.strip() for p in profiles.split(",") if p.strip()],
            broker_url=broker,
            chain_dir=chain_dir,
            workdir=workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="tinyfleet-sim-")),
            duration_s=duration,
            sim_speed=sim_speed,
            sample_period_s=sample_period,
            window_s=window,
            device_prefix=prefix,
            seed=seed,
            mqtt_protocol="3.1.1" if embedded is not None else "5",  # amqtt speaks MQTT 3.1.1 only
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        raise _fail(f"{_OPTION_OF.get(field, field)}: {err['msg']}") from None
    try:
        ModelChain.from_dir(settings.chain_dir)
    except ModelLoadError as exc:
        raise _fail(f"--chain-dir: {exc}") from None

    console = Console()
    plan = make_scenarios(names, settings.duration_s, broker=embedded) if names else None
    sim = FleetSimulator(settings, scenario=plan)
    if embedded is not None:
        embedded.start()
    with Progress(
        TextColumn("[bold]simulating[/]"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("sim", total=settings.duration_s)
        try:
            sim.build()
        except Exception as exc:  # e.g. a chain with no model for one of the profiles
            raise _fail(f"cannot set up the devices: {exc}") from None
        try:
            out = sim.run(progress=lambda done, _total: bar.update(task, completed=done))
        finally:
            if embedded is not None:
                embedded.stop()
    write_results(out, results)
    _print_summary(console, out)
    console.print(f"results: {results}")
    raise typer.Exit(0 if out["totals"]["drained"] == out["totals"]["devices"] else 1)


def _print_summary(console: Console, out: dict[str, Any]) -> None:
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in out["devices"]:
        rows[d["hardware_class"]].append(d)
    t = Table(
        title=f"{out['totals']['devices']} devices, {out['sim_s']:.0f} simulated s "
        f"in {out['wall_s']:.1f} wall s"
    )
    for col in (
        "profile",
        "devices",
        "windows sent",
        "inferences",
        "fallback switches",
        "min battery %",
        "drained",
    ):
        t.add_column(col, justify="right")
    for profile, ds in sorted(rows.items()):
        batteries = [d["battery_pct"] for d in ds if d["battery_pct"] is not None]
        t.add_row(
            profile,
            str(len(ds)),
            str(sum(d["windows_sent"] for d in ds)),
            str(sum(d["inferences"] for d in ds)),
            str(sum(d["fallback_switches"] for d in ds)),
            f"{min(batteries):.2f}" if batteries else "—",
            f"{sum(d['drained'] for d in ds)}/{len(ds)}",
        )
    console.print(t)
