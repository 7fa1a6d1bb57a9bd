"""Power-loss test: SIGKILL a real installing process at hundreds of points; the device must never brick.

Each sequence starts from a device provisioned with v1 (counter 1) and a signed release of v2
(counter 2, full artifact and bsdiff delta). A child process (tests/ota/_power_loss_child.py, no
TensorFlow) boots, installs, reboots into the trial, health-checks and commits; it is killed at the
N-th crash point (every fsync, rename and chunk write), then restarted -- sometimes killed again --
until a run completes. Power-ons are forked by the child script's --serve zygote (a subprocess that
imported everything once), each a separate process killed with SIGKILL; every 32nd sequence runs
each power-on as a plain `python _power_loss_child.py ...` subprocess instead.

After a third of the kills the parent also destroys what was written after the last fsync (see
drop_unsynced). After every kill the parent checks, on a copy of the store, that boot() picks a
slot whose bytes match the state record and are v1 or v2, that the real LiteRT interpreter loads it
and gives that model's output, that the slot running before the update was never written, and
that the installed counter never went backwards.

Kills: TINYFLEET_POWER_LOSS_KILLS (default 300; seed: TINYFLEET_POWER_LOSS_SEED) split over full
installs, delta installs, a release failing its health check, chained kills during recovery, and
parent-side kills after random delays.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from ota.slot_state import read_copies
from ota.slots import SlotStore

HERE = Path(__file__).parent
CHILD = HERE / "_power_loss_child.py"
CAPACITY = 64 * 1024 * 1024
KILLS = int(os.environ.get("TINYFLEET_POWER_LOSS_KILLS", "300"))
SEED = int(os.environ.get("TINYFLEET_POWER_LOSS_SEED", "20261123"))


def _support():
    name = "tinyfleet_tests_slot_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "_slot_support.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@dataclass
class World:
    release_dir: Path
    template: Path  # a store provisioned with v1
    work: Path
    sha_v1: str
    sha_v2: str
    outputs: dict[str, np.ndarray]  # sha256 -> LiteRT output of that model
    kills: int = 0
    labels: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    support = _support()
    v1, v2 = support.build_models(tmp_path_factory.getbasetemp() / "ota-models")
    kit = support.make_kit(v1, v2)
    base = tmp_path_factory.mktemp("power-loss")
    release_dir = support.write_release_dir(kit, base / "release")
    template = base / "template"
    SlotStore(template, capacity=CAPACITY).provision(v1, counter=1)
    outputs = {}
    for data in (v1, v2):
        path = base / f"{hashlib.sha256(data).hexdigest()}.tflite"
        path.write_bytes(data)
        outputs[hashlib.sha256(data).hexdigest()] = support.run_litert(path)
    assert not np.allclose(*outputs.values()), "v1 and v2 must be told apart by their output"
    return World(
        release_dir,
        template,
        base / "work",
        hashlib.sha256(v1).hexdigest(),
        hashlib.sha256(v2).hexdigest(),
        outputs,
    )


def _child(world: World, store: Path, mode: str, health: str, crash_at: int | None = None) -> list[str]:
    cmd = [sys.executable, str(CHILD), "--store", str(store), "--release", str(world.release_dir)]
    cmd += ["--mode", mode, "--health", health, "--capacity", str(CAPACITY)]
    if crash_at is not None:
        cmd += ["--crash-at", str(crash_at)]
    return cmd


def _run(cmd: list[str], kill_after: float | None = None) -> tuple[int, str, str]:
    """A power-on in a fresh interpreter (plain subprocess)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


class Zygote:
    """The child script in --serve mode: forks one real process per power-on, without start-up cost."""

    def __init__(self) -> None:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=env,
        )
        assert self._line() == "READY"

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("power-loss zygote died")
        return line.rstrip("\n")

    def run(self, cmd: list[str], kill_after: float | None = None) -> tuple[int, str, str]:
        """Same contract as :func:`_run`: (exit code, RESULT lines, CRASH/ERROR lines)."""
        self.proc.stdin.write(json.dumps(cmd[2:]) + "\n")
        self.proc.stdin.flush()
        out: list[str] = []
        err: list[str] = []
        while True:
            line = self._line()
            kind, _, rest = line.partition(" ")
            if kind == "PID" and kill_after is not None:
                time.sleep(kill_after)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(rest), signal.SIGKILL)
            elif kind == "RESULT":
                out.append(rest)
            elif kind in ("CRASH", "ERROR"):
                err.append(line if kind == "CRASH" else json.loads(rest))
            elif kind == "EXIT":
                return int(rest.split()[1]), "\n".join(out), "\n".join(err)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def check_device(world: World, store: Path, last_counter: int) -> int:
    """What a power-on would find now: a verified, loadable model; the counter did not go backwards."""
    assert read_copies(store), "no valid state copy: a state write was not atomic"
    # boot() writes (it counts trial attempts), so look through a copy and leave the device as it is.
    peek = world.work / "peek"
    shutil.rmtree(peek, ignore_errors=True)
    shutil.copytree(store, peek)
    decision = SlotStore(peek, capacity=CAPACITY).boot()
    sha = hashlib.sha256(decision.path.read_bytes()).hexdigest()
    assert sha == decision.image.sha256, "booted slot does not match the state record"
    assert sha in (world.sha_v1, world.sha_v2), "booted slot holds neither v1 nor v2"
    np.testing.assert_allclose(_support().run_litert(decision.path), world.outputs[sha], rtol=1e-5)
    # v1 ran in slot A when the update started: the running slot is never written.
    assert hashlib.sha256((store / "slot_a.bin").read_bytes()).hexdigest() == world.sha_v1
    counter = SlotStore(store, capacity=CAPACITY).load().installed_counter
    assert last_counter <= counter <= 2, f"installed counter went from {last_counter} to {counter}"
    return counter


def drop_unsynced(world: World, store: Path, rng: random.Random) -> None:
    """What a real power cut may add to a process kill: bytes written after the last fsync are lost
    or garbage. Temp files vanish; the tail of a partial write past its durable offset is cut at a
    random length and filled with noise."""
    for tmp in store.glob("*.tmp"):
        tmp.unlink()
    pending = SlotStore(store, capacity=CAPACITY).load().pending
    if pending is None:
        return
    for path, durable in (
        (store / f"slot_{pending.slot}.bin", pending.progress.offset),
        (store / "staging.patch", pending.patch_progress.offset),
    ):
        size = path.stat().st_size if path.exists() else 0
        if size > durable:
            keep = rng.randint(durable, size)
            with path.open("r+b") as f:
                f.truncate(keep)
                f.seek(durable)
                f.write(rng.randbytes(keep - durable))
            world.outcomes["unsynced tails damaged"] += 1


def run_sequence(
    world: World,
    rng: random.Random,
    *,
    mode: str,
    health: str,
    first: int | None,
    delay: float | None = None,
    chain: float = 0.3,
    runner: Callable[[list[str], float | None], tuple[int, str, str]] = _run,
) -> None:
    """Kill at ``first`` (or after ``delay`` s), restart, maybe kill again, ... until a run completes."""
    store = world.work / "store"
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(world.template, store)
    counter = 1
    crash_at, kill_after = first, delay
    for _ in range(12):
        rc, _out, err = runner(_child(world, store, mode, health, crash_at), kill_after)
        if rc == -signal.SIGKILL:
            world.kills += 1
            label = next((ln[6:] for ln in err.splitlines() if ln.startswith("CRASH ")), "parent-kill")
            world.labels[label.split(":")[0]] += 1
            if rng.random() < 0.3:
                drop_unsynced(world, store, rng)
            counter = check_device(world, store, counter)
            # Chained: killed again while recovering (a resumed run passes fewer points).
            crash_at = rng.randint(1, 12) if rng.random() < chain else None
            kill_after = None
            continue
        assert rc == 0, f"child failed (rc {rc}):\n{err[-3000:]}"
        break
    else:
        pytest.fail("device never completed its update after 12 power-ons")
    counter = check_device(world, store, counter)
    state = SlotStore(store, capacity=CAPACITY).load()
    assert state.pending is None and not state.trial
    active_sha = hashlib.sha256((store / f"slot_{state.active}.bin").read_bytes()).hexdigest()
    if health == "fail" or state.is_refused(2):
        # A failed health check, or a trial killed in every one of its boot attempts, reverts to v1.
        assert (active_sha, counter, state.is_refused(2)) == (world.sha_v1, 1, True)
        if health == "ok":
            assert "boot attempts" in state.refused[-1].reason
        world.outcomes[
            "v1: health check failed" if health == "fail" else "v1: trial killed in every boot"
        ] += 1
    else:
        assert (active_sha, counter) == (world.sha_v2, 2)
        world.outcomes["v2 committed"] += 1


def _points(world: World, mode: str, runner: Callable = _run) -> tuple[int, float]:
    """Crash points a clean install passes, counted by a real run, and that run's wall time."""
    store = world.work / "count"
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(world.template, store)
    start = time.monotonic()
    rc, out, err = runner(_child(world, store, mode, "ok"), None)
    assert rc == 0, err
    return json.loads(out.splitlines()[-1])["points"], time.monotonic() - start


@pytest.mark.slow
def test_power_loss_never_bricks(world: World) -> None:
    world.work.mkdir(exist_ok=True)
    rng = random.Random(SEED)
    # Calibrate with fresh interpreters (the plain CLI path) and with the zygote.
    (full_points, subprocess_time), (delta_points, _) = _points(world, "full"), _points(world, "delta")
    zygote = Zygote()
    try:
        assert _points(world, "full", zygote.run)[0] == full_points
        zygote_time = _points(world, "full", zygote.run)[1]

        def firsts() -> Iterator[tuple[str, int]]:
            # Every crash point of a full and of a delta install, in a seeded random order (repeated
            # when the budget is larger than one pass).
            while True:
                points = [("full", i) for i in range(1, full_points + 1)]
                points += [("delta", i) for i in range(1, delta_points + 1)]
                rng.shuffle(points)
                yield from points

        # Sequences run until the kill budget is spent (chained kills during recovery count too).
        # Every 10th installs a release that fails its health check; every 8th is killed by the
        # parent at a random moment instead (no cooperation from the child at all); every 32nd runs
        # each power-on in a fresh interpreter instead of a zygote fork.
        t0 = time.monotonic()
        sequences = 0
        for index, (mode, first) in enumerate(firsts()):
            if world.kills >= KILLS:
                break
            fresh = index % 32 == 5
            runner = _run if fresh else zygote.run
            health = "fail" if index % 10 == 9 else "ok"
            delay = None
            if index % 8 == 7:
                delay = rng.uniform(0.3, 1.05) * (subprocess_time if fresh else zygote_time)
            run_sequence(
                world,
                rng,
                mode=mode,
                health=health,
                first=None if delay else first,
                delay=delay,
                runner=runner,
            )
            sequences += 1
        elapsed = time.monotonic() - t0
    finally:
        zygote.close()
    print(
        f"\npower-loss: {world.kills} kills in {sequences} sequences, {elapsed:.1f}s; "
        f"points per install full={full_points} delta={delta_points}; one clean install "
        f"{subprocess_time * 1000:.0f} ms in a fresh interpreter, {zygote_time * 1000:.0f} ms forked; "
        f"killed in phase: {dict(world.labels)}; outcomes: {dict(world.outcomes)}"
    )
    assert world.kills >= KILLS, "too few kills landed"
    assert world.outcomes["v2 committed"] > 0 and world.outcomes["v1: health check failed"] > 0
