"""The `tinyfleet` console entry point.

Sub-command modules import only typer and rich at module level; TensorFlow (converters), FastAPI
(server) and the agent's runtimes are imported inside the command functions, so `tinyfleet agent`
on a Pi never pays for what only the server uses.
"""

from __future__ import annotations

import typer

from fleet_server.cli.agent_commands import agent_command
from fleet_server.cli.catalog_commands import (
    job_command,
    list_command,
    retry_command,
    show_command,
    upload_command,
    versions_command,
    worker_app,
)
from fleet_server.cli.demo_command import demo_command
from fleet_server.cli.devices_commands import devices_app
from fleet_server.cli.drift_commands import alerts_app, drift_app, retraining_app
from fleet_server.cli.ingest_commands import broker_app, ingest_app
from fleet_server.cli.keys_commands import keys_app
from fleet_server.cli.model_commands import model_app
from fleet_server.cli.reference_commands import reference_command
from fleet_server.cli.release_commands import release_app
from fleet_server.cli.rollout_commands import rollout_app, rollouts_app
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
# Model catalog over REST (fleet_server/cli/catalog_commands.py), next to the local convert/reference.
model_app.command("upload")(upload_command)
model_app.command("list")(list_command)
model_app.command("versions")(versions_command)
model_app.command("show")(show_command)
model_app.command("job")(job_command)
model_app.command("retry")(retry_command)
app.add_typer(model_app, name="model")
app.add_typer(worker_app, name="worker")
app.add_typer(server_app, name="server")
app.add_typer(devices_app, name="devices")
app.add_typer(ingest_app, name="ingest")
app.add_typer(broker_app, name="broker")
app.add_typer(release_app, name="release")
app.add_typer(rollout_app, name="rollout")
app.add_typer(rollouts_app, name="rollouts")
app.add_typer(keys_app, name="keys")
app.add_typer(drift_app, name="drift")
app.add_typer(alerts_app, name="alerts")
app.add_typer(retraining_app, name="retraining")
app.command("agent", help="Run the device agent (one device) from a device.toml.")(agent_command)
app.command("simulate", help="Run N simulated devices as real agents over real MQTT.")(simulate_command)


app.command("demo", help="The fleet demo end to end: chains, releases, rollouts, drift, low battery.")(
    demo_command
)


if __name__ == "__main__":
    app()
