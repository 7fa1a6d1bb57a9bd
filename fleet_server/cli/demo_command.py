"""`tinyfleet demo`: the README's main job.

For now: build both reference fallback chains (train, convert to four TFLite variants, validate on
LiteRT and TFLite Micro, order by measured cost, run the keyword spotter over the continuous stream)
with a Rich progress display, then print the summary tables and where the JSON reports are.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from fleet_server.cli.reference_commands import (
    BUILD_LOG,
    KNOWN_TASKS,
    ReferenceInputError,
    build_chains,
    print_chain,
)


def run_demo(out: str) -> int:
    """Build and report both chains under ``out``/reference; returns the process exit code."""
    console = Console()
    root = Path(out)
    if root.exists() and not root.is_dir():
        console.print(f"[red]error:[/] --out {root} exists and is not a directory")
        return 2
    chains_dir = root / "reference"
    from converters.reference.chain import ChainError

    console.rule("TinyFleet demo: reference model chains")
    try:
        # The demo directory is the demo's own scratch space: a re-run replaces the previous chains
        # (atomically, per chain), so `tinyfleet demo` can be run again and again.
        reports = build_chains(list(KNOWN_TASKS), chains_dir, overwrite=True, console=console)
    except (ChainError, ReferenceInputError) as exc:
        console.print(f"[red]error:[/] {exc} (log: {chains_dir / BUILD_LOG})")
        return 1
    for task, report in reports.items():
        print_chain(console, report, chains_dir / task)
    console.print(f"build log (TensorFlow output): {chains_dir / BUILD_LOG}")
    return 0
