"""A local worker as a child process of the API server (``job_worker_autostart``; job_queue=local).

A process, not a thread: TensorFlow loads in the child only, a crash there cannot take the API down,
and the settings reach it through the same TINYFLEET_* environment any worker reads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from fleet_server.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes ``Settings()`` in a child equal ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYFLEET_")}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (list, tuple, dict)):
            text = json.dumps(value)
        elif isinstance(value, Path):
            text = str(value.resolve())
        else:
            text = str(value)
        env[f"TINYFLEET_{name.upper()}"] = text
    return env


class WorkerProcess:
    """``python -m fleet_server.catalog.worker`` started with the parent's settings."""

    def __init__(self, settings: Settings, extra_args: list[str] | None = None) -> None:
        self.settings = settings
        self.args = [
            sys.executable,
            "-m",
            "fleet_server.catalog.worker",
            "--queue",
            "local",
            *(extra_args or []),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = settings_env(self.settings)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # Own process group: stopping the worker also stops the TFLM probe children it forks.
        self.process = subprocess.Popen(self.args, env=env, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (the worker finishes its current job), then SIGKILL after ``timeout_s``."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def kill(self) -> int:
        """SIGKILL the worker and its children at once (what a crash or an OOM kill does)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait()
