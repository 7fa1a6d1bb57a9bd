"""`tinyfleet demo`: the README's main job, the whole fleet loop in one command.

Builds (or reuses) the reference chains, makes a good and a bad release of the KWS primary, starts the
server on SQLite with an embedded MQTT broker (or ``--mqtt-url`` / ``--database-url``) plus the ingest
worker and the rollout runner, simulates ``--devices`` real agents, rolls the good release out to 100 %,
stops the bad one at the canary, drifts part of the fleet, drains a low-battery cohort, and prints a
summary and the dashboard URL. Steps whose parts are missing are reported as skipped with the reason.

Exit codes: 0 every step that ran succeeded, 1 a step failed, 2 bad option.
Wire: ``app.command("demo")(demo_command)`` in fleet_server/cli/main.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

_err = Console(stderr=True)


def demo_command(
    out: Annotated[Path, typer.Option(help="Directory for the demo's artifacts and state.")] = Path(
        "out/demo"
    ),
    devices: Annotated[int, typer.Option(min=4, max=500, help="Simulated devices.")] = 50,
    mqtt_url: Annotated[
        str | None,
        typer.Option(help="Use this MQTT broker (mqtt://[user:pass@]host:port) instead of the embedded one."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL of an EMPTY database (e.g. PostgreSQL); default SQLite."),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(min=1.0, help="Simulated seconds per wall second; default: as fast as possible."),
    ] = None,
    sample_period: Annotated[
        float, typer.Option(min=0.1, max=60.0, help="Simulated seconds between wakes.")
    ] = 2.0,
    soak: Annotated[
        int, typer.Option(min=0, max=86_400, help="Simulated soak seconds per rollout stage.")
    ] = 600,
    rebuild: Annotated[
        bool, typer.Option(help="Train the reference chains again even if a valid build exists.")
    ] = False,
    serve: Annotated[bool, typer.Option(help="Keep serving the API and dashboard until Ctrl-C.")] = False,
    log_level: Annotated[str, typer.Option(help="Log level for the components (stderr).")] = "error",
) -> None:
    """Run the fleet demo end to end (about 4 minutes; the first run also trains the reference models)."""
    from fleet_server.demo.orchestrator import DemoOptions, DemoRun
    from fleet_server.demo.summary import outcomes_table, phases_table

    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        _err.print(
            f"[bold red]error:[/] --log-level must be debug, info, warning or error, got {log_level!r}"
        )
        raise typer.Exit(2)
    if out.exists() and not out.is_dir():
        _err.print(f"[bold red]error:[/] --out {out} exists and is not a directory")
        raise typer.Exit(2)
    if mqtt_url is not None and not mqtt_url.startswith(("mqtt://", "tcp://")):
        _err.print(f"[bold red]error:[/] --mqtt-url must look like mqtt://host:port, got {mqtt_url!r}")
        raise typer.Exit(2)
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    console = Console()
    options = DemoOptions(
        out=out,
        devices=devices,
        mqtt_url=mqtt_url,
        database_url=database_url,
        speed=speed,
        sample_period_s=sample_period,
        soak_s=soak,
        rebuild=rebuild,
    )
    run = DemoRun(options, console)
    try:
        result = run.run()
        console.rule("[bold]summary")
        console.print(phases_table(result))
        outcomes = outcomes_table(result)
        if outcomes is not None:
            console.print(outcomes)
        if run.stack is not None and run.stack.api_port:
            url = f"{run.stack.url}/dashboard"
            result.dashboard_url = url
            console.print(f"dashboard: [bold]{url}[/] (token: {run.stack.token})", highlight=False)
        console.print(f"results: {result.results_path}")
        if not serve and run.stack is not None:
            where = (
                f"TINYFLEET_DATABASE_URL='{database_url}'"
                if database_url
                else f"TINYFLEET_DATA_DIR={out / 'server'}"
            )
            console.print(
                f"the demo server stops now; browse its data later with `{where} tinyfleet server run` "
                "(or rerun with --serve)",
                highlight=False,
            )
        if serve and run.stack is not None:
            console.print("serving until Ctrl-C …")
            import time

            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        run.close()
    raise typer.Exit(0 if result.ok else 1)
