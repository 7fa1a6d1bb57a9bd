"""The agent process: ``python -m device_agent.main --config device.toml`` (``tinyfleet agent`` calls
:func:`run_agent`).

Exit codes: 0 after a clean stop (SIGTERM / SIGINT), 2 for a bad config or bad arguments (one line on
stderr naming the file and the field), 1 when the agent cannot start (no model loads, slot store
unusable). Logs go to stderr (journald under systemd). TensorFlow is never imported.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

log = logging.getLogger("device_agent")

EXIT_OK = 0
EXIT_START_FAILED = 1
EXIT_BAD_CONFIG = 2
LOG_LEVELS = ("debug", "info", "warning", "error")


def _fail(message: str, code: int) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever the message held
    return code


def _read_root_keys(paths: Sequence[Path]) -> list[bytes]:
    if not paths:
        return []
    from ota.keys import load_public_key  # cryptography: only when trust roots are configured

    return [load_public_key(p) for p in paths]


def run_agent(
    config: Path,
    *,
    sim_speed: float = 1.0,
    root_keys: Sequence[Path] = (),
    log_level: str = "info",
    stop: threading.Event | None = None,
) -> int:
    """Load ``config``, run the agent until SIGTERM/SIGINT (or ``stop``), stop cleanly; an exit code."""
    from device_agent.agent import AgentOptions, PacedClock, load_agent
    from device_agent.config import ConfigError

    if log_level not in LOG_LEVELS:
        return _fail(
            f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}", EXIT_BAD_CONFIG
        )
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop_event = stop if stop is not None else threading.Event()
    try:
        clock = PacedClock(sim_speed, stop_event)
    except ValueError as exc:
        return _fail(f"--sim-speed: {exc}", EXIT_BAD_CONFIG)
    try:
        keys = _read_root_keys(root_keys)
    except Exception as exc:  # ota.errors.KeyFileError, OSError, ValueError: all say which file
        return _fail(f"--root-key: {exc}", EXIT_BAD_CONFIG)
    try:
        agent = load_agent(config, AgentOptions(clock=clock, root_public_keys=keys))
    except ConfigError as exc:
        return _fail(str(exc), EXIT_BAD_CONFIG)
    except Exception as exc:  # a chain that does not load, a state dir we cannot write
        return _fail(f"{config}: cannot set up the agent: {exc}", EXIT_START_FAILED)
    agent.stop_event = stop_event

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop_event.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    try:
        agent.start()
    except Exception as exc:  # AgentError, or a broken state dir
        agent.stop(drain_timeout_s=0)
        return _fail(f"agent {agent.device_id} cannot start: {exc}", EXIT_START_FAILED)
    try:
        agent.run_forever()
    finally:
        agent.stop()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tinyfleet-agent", description="Run the TinyFleet device agent.")
    ap.add_argument("--config", type=Path, required=True, help="device.toml")
    ap.add_argument(
        "--sim-speed",
        type=float,
        default=1.0,
        help="simulated board only: simulated seconds per wall second (default 1)",
    )
    ap.add_argument(
        "--root-key",
        type=Path,
        action="append",
        default=[],
        help="Ed25519 release root public key (PEM or raw); repeatable; none: updates are refused",
    )
    ap.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments already; keep its code
        return int(exc.code or 0)
    return run_agent(args.config, sim_speed=args.sim_speed, root_keys=args.root_key, log_level=args.log_level)


if __name__ == "__main__":
    sys.exit(main())
