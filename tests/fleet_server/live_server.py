"""A real `tinyfleet server run` (uvicorn) on a free port, for CLI and HTTP-level tests.

Imported by name (tests/fleet_server/conftest.py puts this directory on sys.path). The session fixture
``live_server`` in tests/fleet_server/cli/conftest.py wraps :func:`live_server_process`; other tests
may start their own with different settings::

    with live_server_process(tmp_path, env={"TINYFLEET_MAX_BODY_BYTES": "4096"}) as server:
        httpx.get(server.url("/healthz"))
        server.bearer("operator")   # {"Authorization": "Bearer tfo_..."}

One admin, operator and viewer token each (``live-<role>``) are made before the server starts.
The rollout runner is off unless ``env`` turns it on (``TINYFLEET_ROLLOUT_RUNNER_ENABLED``).
On exit the server gets SIGINT (graceful shutdown: the audit writer drains) and its stderr is kept
in ``server.log`` for assertions (e.g. that no secret was logged).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SERVER = "from fleet_server.cli.server_commands import server_app; server_app()"
ROLES = ("admin", "operator", "viewer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    base_url: str
    tokens: dict[str, str]
    env: dict[str, str]
    db_url: str
    process: subprocess.Popen[bytes]
    log: str = field(default="")

    def url(self, path: str) -> str:
        return self.base_url + path

    def bearer(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def cli_env(self, role: str = "admin") -> dict[str, str]:
        """Environment for `tinyfleet ...` operator commands against this server."""
        return {"TINYFLEET_SERVER": self.base_url, "TINYFLEET_TOKEN": self.tokens[role]}


def _make_tokens(db_url: str, data_dir: Path) -> dict[str, str]:
    """Migrate and create one token per role in this process (three `create-token` runs cost seconds)."""
    from fleet_server.auth import Role, issue_token
    from fleet_server.db import make_engine, make_session_factory
    from fleet_server.db.migrate import upgrade_to_head

    data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(db_url)
    try:
        upgrade_to_head(engine)
        with make_session_factory(engine)() as session:
            tokens = {
                role: issue_token(session, name=f"live-{role}", role=Role[role], created_by="test").secret
                for role in ROLES
            }
            session.commit()
    finally:
        engine.dispose()
    return tokens


@contextlib.contextmanager
def live_server_process(
    workdir: Path,
    *,
    db_url: str | None = None,
    env: dict[str, str] | None = None,
    workers: int = 1,
    start_timeout_s: float = 60.0,
) -> Iterator[LiveServer]:
    """Start the server on a fresh SQLite file in ``workdir`` (or on ``db_url``) and stop it afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    db_url = db_url or f"sqlite:///{workdir / 'live.db'}"
    full_env = {
        **os.environ,
        "TINYFLEET_DATABASE_URL": db_url,
        "TINYFLEET_DATA_DIR": str(workdir / "data"),
        "TINYFLEET_ROLLOUT_RUNNER_ENABLED": "false",
        # `server run` starts these by default; tests that want them say so in ``env``.
        "TINYFLEET_JOB_WORKER_AUTOSTART": "false",
        "TINYFLEET_DRIFT_SCHEDULER_ENABLED": "false",
        "TINYFLEET_DEVICE_CREDENTIAL_ITERATIONS": "1000",  # fewer KDF rounds only to keep tests fast
        **(env or {}),
    }
    tokens = _make_tokens(db_url, workdir / "data")
    port = free_port()
    log_path = workdir / f"server-{port}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, "run", "--port", str(port), "--log-level", "warning"]
            + (["--workers", str(workers)] if workers != 1 else []),
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # SIGINT to the whole group reaches uvicorn's worker processes
        )
    server = LiveServer(f"http://127.0.0.1:{port}", tokens, full_env, db_url, proc)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{log_path.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(server.url("/healthz"), timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"server did not answer within {start_timeout_s} s:\n{log_path.read_text()}"
                )
            time.sleep(0.1)
        yield server
    finally:
        stop(server)
        server.log = log_path.read_text(errors="replace")


def stop(server: LiveServer, timeout_s: float = 20.0) -> None:
    """Graceful stop (SIGINT: uvicorn runs the app's shutdown); killed if it hangs."""
    proc = server.process
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
