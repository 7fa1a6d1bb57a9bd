"""Run the real TFLite Micro interpreter safely: every probe in a forked child of a small worker.

Why a child: the tflite-micro Python interpreter, given too small an arena, logs "Failed to allocate
tail memory" and then segfaults on invoke, taking the process with it. Why a worker that forks
instead of one fresh Python per probe: the worker imports only numpy and tflite_micro (never
TensorFlow), so a fork costs milliseconds and the arena search can afford a byte-exact bisection.
A missing operator is reported by TFLM as log text ("Failed to get registration from op code X")
followed by a RuntimeError, so op support is decided from the captured log of a one-operator model.

Run as ``python -m converters.tflm_probe`` (JSON lines on stdin/stdout); use it through `TflmProbe`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from converters.errors import TflmProbeError

CHILD_TIMEOUT_S = 120
_OK, _PY_ERROR = 0, 3
_MISSING_OP = re.compile(
    r"(?:Failed to get registration from op code|Didn't find op for builtin opcode)\s+'?([A-Z0-9_]+)"
)
_RECORDED_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_LOG_TAIL_CHARS = 2000


class ProbeResult(BaseModel):
    ok: bool
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    log: str  # tail of everything the interpreter printed


class ArenaMeasurement(BaseModel):
    arena_bytes: int  # smallest arena that allocated and invoked
    granularity_bytes: int
    recorded_bytes: int | None
    probes: int


# ----------------------------------------------------------------------------- worker (child side)


def _in_child(log_path: str, body: Any) -> ProbeResult:
    """Fork; run body() in the child with stdout/stderr captured to log_path; report how it ended."""
    pid = os.fork()
    if pid == 0:  # child
        code = _PY_ERROR
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            signal.alarm(CHILD_TIMEOUT_S)
            body()
            code = _OK
        except BaseException as exc:  # the child must never return into the worker loop
            with contextlib.suppress(OSError):
                os.write(2, f"\nPYTHON-ERROR {type(exc).__name__}: {exc}\n".encode())
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    log = Path(log_path).read_text(errors="replace")[-_LOG_TAIL_CHARS:] if Path(log_path).exists() else ""
    if os.WIFSIGNALED(status):
        return ProbeResult(ok=False, exit_code=None, signal=os.WTERMSIG(status), log=log)
    code = os.WEXITSTATUS(status)
    return ProbeResult(ok=code == _OK, exit_code=code, signal=None, log=log)


def _interpreter(model_path: str, arena: int) -> Any:
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(Path(model_path).read_bytes(), arena_size=int(arena))


def _invoke_once(model_path: str, arena: int, print_allocations: bool = False) -> None:
    interpreter = _interpreter(model_path, arena)
    details = interpreter.get_input_details(0)
    interpreter.set_input(np.zeros(tuple(details["shape"]), dtype=details["dtype"]), 0)
    interpreter.invoke()
    interpreter.get_output(0)
    if print_allocations:
        interpreter.print_allocations()


def _run_all(model_path: str, arena: int, inputs_path: str, outputs_path: str) -> None:
    interpreter = _interpreter(model_path, arena)
    inputs = np.load(inputs_path)
    outputs = []
    for sample in inputs:
        interpreter.set_input(sample[np.newaxis], 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0))[0])
    np.save(outputs_path, np.stack(outputs))


def _handle(request: dict[str, Any], log_path: str) -> dict[str, Any]:
    cmd = request["cmd"]
    if cmd == "invoke":
        result = _in_child(log_path, lambda: _invoke_once(request["model"], request["arena"]))
    elif cmd == "recorded":
        result = _in_child(log_path, lambda: _invoke_once(request["model"], request["arena"], True))
    elif cmd == "run":
        result = _in_child(
            log_path,
            lambda: _run_all(request["model"], request["arena"], request["inputs"], request["outputs"]),
        )
    elif cmd == "ping":
        return {"ok": True}
    else:
        return {"ok": False, "exit_code": None, "signal": None, "log": f"unknown command {cmd!r}"}
    return result.model_dump()


def worker_main() -> None:
    # Replies go to the original stdout; anything else printing to fd 1 lands on stderr instead.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    # Imported once here so every forked probe inherits it instead of paying the import again.
    from tflite_micro.python.tflite_micro import runtime  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="tflm-probe-") as tmp:
        log_path = os.path.join(tmp, "child.log")
        for line in sys.stdin:
            if not line.strip():
                continue
            replies.write(json.dumps(_handle(json.loads(line), log_path)) + "\n")


# ----------------------------------------------------------------------------- client (parent side)


class TflmProbe:
    """A worker process for TFLM probes. Use as a context manager; not thread-safe."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="tflm-client-")
        self.probes = 0

    def __enter__(self) -> TflmProbe:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "converters.tflm_probe"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self._request({"cmd": "ping"})
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.stdin:
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout:
                self._proc.stdout.close()
            self._proc = None
        self._tmp.cleanup()

    def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._proc is None or self._proc.stdin is None or self._proc.stdout is None:
            raise TflmProbeError("TFLM probe worker is not running")
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except (BrokenPipeError, OSError) as exc:
            raise TflmProbeError(f"TFLM probe worker died: {exc}") from exc
        if not line:
            raise TflmProbeError(f"TFLM probe worker exited (code {self._proc.poll()})")
        self.probes += 1
        return json.loads(line)

    def _model_file(self, model: bytes) -> str:
        """Path of `model` on disk; written once per distinct model, not once per probe."""
        digest = hashlib.sha256(model).hexdigest()[:16]
        path = os.path.join(self._tmp.name, f"{digest}.tflite")
        if not os.path.exists(path):
            Path(path).write_bytes(model)
        return path

    def invoke(self, model: bytes, arena: int) -> ProbeResult:
        """Construct with `arena` bytes, set a zero input, invoke once."""
        path = self._model_file(model)
        return ProbeResult.model_validate(self._request({"cmd": "invoke", "model": path, "arena": arena}))

    def missing_ops(self, ops: list[str]) -> list[str]:
        """The ops (names as in tflite_inspect.operator_names) that the TFLM op resolver lacks."""
        from converters.tflite_inspect import single_op_model

        missing = []
        for op in ops:
            result = self.invoke(single_op_model(op), 4096)
            # The one-op model has no tensors, so it never runs; only a failed lookup matters here.
            if _MISSING_OP.search(result.log) or "Didn't find op for custom opcode" in result.log:
                missing.append(op)
        return missing

    def recorded_arena(self, model: bytes, arena: int) -> int | None:
        path = self._model_file(model)
        result = ProbeResult.model_validate(self._request({"cmd": "recorded", "model": path, "arena": arena}))
        match = _RECORDED_TOTAL.search(result.log)
        return int(match.group(1)) if result.ok and match else None

    def minimum_arena(self, model: bytes, max_arena: int = 512 * 1024 * 1024) -> ArenaMeasurement | None:
        """Smallest arena (exact to the byte) that allocates and invokes the model; None if none does."""
        start = self.probes
        big = max(64 * 1024, 4 * len(model))
        while not self.invoke(model, big).ok:
            if big >= max_arena:
                return None
            big = min(big * 4, max_arena)
        recorded = self.recorded_arena(model, big)
        # The recorded total leaves out the allocator's own objects, which TFLM also places in the
        # arena (a few hundred bytes), so bracket just above it, widen if needed, then bisect to the byte.
        lo = min(recorded or big // 2, big - 1)
        hi = min(big, lo + 1024)
        while not self.invoke(model, hi).ok:
            lo, hi = hi, min(big, hi + max(1024, (hi - lo) * 2))
        while lo > 0 and self.invoke(model, lo).ok:
            hi, lo = lo, lo // 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.invoke(model, mid).ok:
                hi = mid
            else:
                lo = mid
        return ArenaMeasurement(
            arena_bytes=hi, granularity_bytes=1, recorded_bytes=recorded, probes=self.probes - start
        )

    def run(self, model: bytes, arena: int, inputs: np.ndarray) -> np.ndarray:
        """TFLM outputs for each sample of `inputs` (already in the model's input dtype)."""
        model_path = self._model_file(model)
        inputs_path = os.path.join(self._tmp.name, "inputs.npy")
        outputs_path = os.path.join(self._tmp.name, "outputs.npy")
        np.save(inputs_path, inputs)
        if os.path.exists(outputs_path):
            os.remove(outputs_path)
        reply = self._request(
            {
                "cmd": "run",
                "model": model_path,
                "arena": arena,
                "inputs": inputs_path,
                "outputs": outputs_path,
            }
        )
        result = ProbeResult.model_validate(reply)
        if not result.ok:
            raise TflmProbeError(
                f"TFLM interpreter failed on the evaluation samples (exit {result.exit_code}, "
                f"signal {result.signal}): {result.log.strip()[-300:]}"
            )
        return np.load(outputs_path)


if __name__ == "__main__":
    worker_main()
