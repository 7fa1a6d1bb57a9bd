"""The demo's reference chains: reuse a valid earlier build under <out>/reference, else build both."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from fleet_server.cli.reference_commands import BUILD_LOG, KNOWN_TASKS, build_chains, print_chain
from fleet_server.demo.stack import DemoError


def chain_is_valid(chain_dir: Path) -> bool:
    """chain.json readable, and every entry's converter report readable with all its files present."""
    from converters.reference.chain import ChainReport
    from converters.report import ConversionReport

    try:
        chain = ChainReport.read(chain_dir)
        for entry in chain.entries:
            d = chain_dir / entry.artifact_dir
            report = ConversionReport.read(d)
            if not all((d / v.file).is_file() for v in report.variants.values()):
                return False
            if not (d / "model.keras").is_file():
                return False
    except Exception:
        return False
    return True


def ensure_chains(
    root: Path, *, rebuild: bool, skip_build: bool, console: Console, tasks: tuple[str, ...] = KNOWN_TASKS
) -> bool:
    """Make sure <root>/<task> holds a valid chain for every task; returns True if reused."""
    from converters.reference.chain import ChainError

    if root.exists() and not root.is_dir():
        raise DemoError(f"{root} exists and is not a directory")
    valid = all(chain_is_valid(root / t) for t in tasks)
    if valid and not rebuild:
        for task in tasks:
            console.print(f"{task}: reusing the chain in {root / task} (pass --rebuild to train again)")
        return True
    if skip_build:
        raise DemoError(f"no valid reference chains under {root} and building is switched off")
    try:
        # The demo directory is the demo's own scratch space: a rebuild replaces the chains atomically.
        reports = build_chains(list(tasks), root, overwrite=True, console=console)
    except ChainError as exc:
        raise DemoError(f"{exc} (log: {root / BUILD_LOG})") from None
    for task, report in reports.items():
        print_chain(console, report, root / task)
    console.print(f"build log (TensorFlow output): {root / BUILD_LOG}")
    return False
