"""The `tinyfleet` console entry point.

Sub-command groups import their heavy dependencies (TensorFlow, FastAPI, ...) inside the command
functions, so `tinyfleet agent` on a Pi never pays for what only the server uses.
"""

from __future__ import annotations

import typer

from fleet_server.cli.model_commands import model_app

app = typer.Typer(
    name="tinyfleet",
    help="TinyFleet: convert, sign and roll out ML models to fleets of edge and TinyML devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(model_app, name="model")


@app.command()
def demo(
    out: str = typer.Option("out/demo", help="Directory for the demo's artifacts."),
) -> None:
    """Run the main job: convert and validate the reference model chains and print the report."""
    from fleet_server.cli.demo_command import run_demo

    raise typer.Exit(run_demo(out))


if __name__ == "__main__":
    app()
