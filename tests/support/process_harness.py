"""Real child processes for fault-injection tests and benchmarks: start them, SIGKILL them, read counts.

Import it by putting ``tests/support`` on ``sys.path`` (as for mosquitto_broker / postgres)::

    from process_harness import IngestProcess, pg_terminate_backends

``IngestProcess`` runs ``python -m fleet_server.cli.ingest_commands ingest run`` (the same code as
``tinyfleet ingest run``) with its database URL tagged with an ``application_name``, so that
:func:`pg_terminate_backends` can kill exactly this worker's PostgreSQL connections (the CI variant of a
database outage: other helpers' tests share the server, so it is not restarted). :func:`restart_postgres`
restarts the real cluster (``pg_ctlcluster``); only the long script (bench/reliability_long.py) uses it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

REPO = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def with_application_name(db_url: str, name: str) -> str:
    """Add ``application_name`` to a PostgreSQL SQLAlchemy URL (libpq passes it to pg_stat_activity)."""
    if not db_url.startswith("postgresql"):
        return db_url
    parts = urlsplit(db_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "application_name"]
    query.append(("application_name", name))
    return urlunsplit(parts._replace(query=urlencode(query)))


class IngestProcess:
    """One ingest worker as a child process. ``start()`` returns once it has subscribed."""

    def __init__(
        self,
        db_url: str,
        mqtt_host: str,
        mqtt_port: int,
        *,
        client_id: str,
        batch_size: int = 100,
        batch_delay_s: float = 0.05,
        application_name: str | None = None,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.extra_args = list(extra_args or [])
        self.client_id = client_id
        self.application_name = application_name or f"tf-{client_id}"
        self.db_url = with_application_name(db_url, self.application_name)
        self.mqtt_host, self.mqtt_port = mqtt_host, mqtt_port
        self.batch_size, self.batch_delay_s = batch_size, batch_delay_s
        self.extra_env = dict(env or {})
        self.stderr_lines: list[str] = []
        self.stdout_text = ""
        self.proc: subprocess.Popen[str] | None = None
        self.pid: int | None = None

    def start(self, timeout: float = 60.0) -> IngestProcess:
        env = dict(
            os.environ,
            TINYFLEET_DATABASE_URL=self.db_url,
            TINYFLEET_MQTT_HOST=self.mqtt_host,
            TINYFLEET_MQTT_PORT=str(self.mqtt_port),
            **self.extra_env,
        )
        self.stderr_lines = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleet_server.cli.ingest_commands",
                "ingest",
                "run",
                "--client-id",
                self.client_id,
                "--batch-size",
                str(self.batch_size),
                "--batch-delay",
                str(self.batch_delay_s),
                "--stats-interval",
                "0",
                "--json",
                *self.extra_args,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid
        proc = self.proc

        def read_stderr() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self.stderr_lines.append(line)

        threading.Thread(target=read_stderr, daemon=True).start()
        if not wait_until(lambda: self.subscribed or proc.poll() is not None, timeout, every=0.05):
            self.kill()
            raise RuntimeError(f"ingest worker {self.client_id} did not subscribe: {self.stderr}")
        if proc.poll() is not None:
            raise RuntimeError(f"ingest worker {self.client_id} exited {proc.returncode}: {self.stderr}")
        return self

    @property
    def subscribed(self) -> bool:
        return any("subscribed" in line for line in self.stderr_lines)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no last commit, no last ack, no clean DISCONNECT (a crash or an OOM kill)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close()

    def terminate(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM (the worker commits and acks what it holds), then return its final counts."""
        assert self.proc is not None, "not started"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=10)
        self.stdout_text = out or ""
        self._close()
        for line in reversed(self.stdout_text.splitlines()):
            if line.startswith("{"):
                return json.loads(line)  # type: ignore[no-any-return]
        raise RuntimeError(f"worker {self.client_id} printed no counts: {self.stdout_text!r} {self.stderr}")

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> IngestProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.alive:
            self.kill()


def _admin_conninfo() -> str:
    from postgres import PG_DB, PG_HOST, PG_PORT, PG_USER  # same directory

    return f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={PG_DB}"


def pg_backends(application_name: str) -> list[int]:
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def pg_terminate_backends(application_name: str) -> int:
    """``pg_terminate_backend`` every connection with this application_name; how many were killed."""
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchall()
    return sum(1 for r in rows if r[0])


def restart_postgres(timeout: float = 60.0) -> float:
    """Restart the real local cluster (Debian ``pg_ctlcluster``); seconds until it accepts connections.

    Every client of the server sees its connections dropped: use it in the long script, not in CI.
    """
    versions = sorted(os.listdir("/etc/postgresql"))
    if not versions:
        raise RuntimeError("no PostgreSQL cluster under /etc/postgresql")
    started = time.monotonic()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"],
        check=True,
        capture_output=True,
        timeout=timeout,
    )

    def accepting() -> bool:
        try:
            with psycopg.connect(_admin_conninfo(), connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    if not wait_until(accepting, timeout, every=0.1):
        raise RuntimeError("PostgreSQL did not come back after the restart")
    return time.monotonic() - started


def process_cpu_rss(pid: int) -> tuple[float, int]:
    """(user+system CPU seconds, RSS bytes) of a live process, from /proc (benchmarks)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss
