"""`tinyfleet agent --config device.toml`: run the device agent as a long-lived process.

Imports only device_agent (inside the command), never TensorFlow or FastAPI: this is what runs on a
Raspberry Pi. Exit codes: 0 clean stop on SIGTERM/SIGINT, 2 bad config or option (one line naming the
field), 1 the agent cannot start. The lead wires it into fleet_server/cli/main.py::

    from fleet_server.cli.agent_commands import agent_command
    app.command("agent")(agent_command)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def agent_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="The device's device.toml.")],
    sim_speed: Annotated[
        float, typer.Option(help="Simulated board only: simulated seconds per wall-clock second.")
    ] = 1.0,
    root_key: Annotated[
        list[Path] | None,
        typer.Option(
            help="Ed25519 release root public key (PEM or raw 32 bytes); repeatable. "
            "Without one every update is refused."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the device agent: inference loop, telemetry over MQTT, commands and OTA updates."""
    from device_agent.main import run_agent

    raise typer.Exit(run_agent(config, sim_speed=sim_speed, root_keys=root_key or [], log_level=log_level))
