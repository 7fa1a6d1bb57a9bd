"""The `tinyfleet` console entry point.

Sub-command modules import only typer and rich at module level; TensorFlow (converters), FastAPI
(server) and the agent's runtimes are imported inside the command functions, so `tinyfleet agent`
on a Pi never pays for what only the server uses.
"""

from __future__ import annotations

import typer

from fleet_server.cli.agent_commands import agent_command
from fleet_server.cli.ingest_commands import broker_app, ingest_app
from fleet_server.cli.model_commands import model_app
from fleet_server.cli.reference_commands import reference_command
from fleet_server.cli.server_commands import server_app
from fleet_server.cli.simulate_commands import simulate_command

app = typer.Typer(
    name="tinyfleet",
    help="TinyFleet: convert, sign and roll out ML models to fleets of edge and TinyML devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
model_app.command("reference", help="Train, convert and validate the reference fallback chains.")(
    reference_command
)
app.add_typer(model_app, name="model")
app.add_typer(server_app, name="server")
app.add_typer(ingest_app, name="ingest")
app.add_typer(broker_app, name="broker")
app.command("agent", help="Run the device agent (one device) from a device.toml.")(agent_command)
app.command("simulate", help="Run N simulated devices as real agents over real MQTT.")(simulate_command)


@app.command()
def demo(
    out: str = typer.Option("out/demo", help="Directory for the demo's artifacts."),
) -> None:
    """Run the main job: convert and validate the reference model chains and print the report."""
    from fleet_server.cli.demo_command import run_demo

    raise typer.Exit(run_demo(out))


if __name__ == "__main__":
    app()
