"""Power loss under the OTA client: SIGKILL a real client process at random points, restart, resume.

Each sequence provisions a device with v1, publishes one release on the real HTTP server (the full v2,
v2 as a delta, or v3 whose golden check fails) and runs tests/device_agent/_ota_client_child.py: one
power-on is killed -- at a random crash point of the slot store / client state writes (every fsync,
rename and chunk write) or by the parent after a random delay -- then the device is powered on again
(sometimes killed once more) until a run reports a resting state.

After every kill, on a copy of the flash: boot() picks a slot whose bytes are one of the released models
and the real LiteRT interpreter loads it; the installed counter never went backwards; the client's state
file is readable. At the end: v2 committed (v3: reverted to v1), and once the commit was durable no
later power-on downloaded the artifact again.

TINYFLEET_OTA_CLIENT_KILLS (default 24) sequences; seed TINYFLEET_OTA_CLIENT_SEED.
(The OTA core's own test kills the installer at several hundred points; this one covers the client.)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ota_support_loader import ota_client_support

from device_agent.ota_state import load_record
from ota.slot_state import read_copies
from ota.slots import SlotStore

HERE = Path(__file__).parent
CHILD = HERE / "_ota_client_child.py"
KILLS = int(os.environ.get("TINYFLEET_OTA_CLIENT_KILLS", "24"))
SEED = int(os.environ.get("TINYFLEET_OTA_CLIENT_SEED", "20261123"))


S = ota_client_support()
RS = S.range_server_module()


def _run(
    flash: Path,
    job: Path,
    *,
    crash_at: int | None = None,
    kill_after: float | None = None,
    count: bool = False,
) -> tuple[str, dict | None]:
    """One power-on. Returns ("killed" | "done", RESULT dict)."""
    cmd = [sys.executable, str(CHILD), "--flash", str(flash), "--job", str(job)]
    if crash_at is not None:
        cmd += ["--crash-at", str(crash_at)]
    if count:
        cmd.append("--count")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = (
            proc.communicate(timeout=kill_after) if kill_after is not None else proc.communicate(timeout=60)
        )
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return "killed", None
    if proc.returncode == -signal.SIGKILL:
        return "killed", None
    assert proc.returncode == 0, f"power-on crashed on its own:\n{out}\n{err[-3000:]}"
    result = next(line for line in out.splitlines() if line.startswith("RESULT "))
    points = [line for line in out.splitlines() if line.startswith("POINTS ")]
    data = json.loads(result.removeprefix("RESULT "))
    if points:
        data["points"] = int(points[0].split()[1])
    return "done", data


def _check_device(flash: Path, allowed: dict[str, str], floor: list[int], scratch: Path) -> int:
    """What a power-on after this kill would find: a verified, loadable model; return the counter floor."""
    copy = scratch / "copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(flash, copy)
    decision = SlotStore(copy, capacity=64 * 1024 * 1024).boot()
    digest = hashlib.sha256(decision.path.read_bytes()).hexdigest()
    assert digest in allowed, f"boot picked slot {decision.slot} holding unknown bytes {digest[:12]}"
    S.run_litert(decision.path)
    counter = max(c.installed_counter for c in read_copies(copy))
    assert counter >= floor[-1], f"installed counter went back from {floor[-1]} to {counter}"
    floor.append(counter)
    load_record(copy)  # never a torn client state file (raises RecordUnreadable)
    return counter


@pytest.mark.slow
def test_client_survives_sigkill_anywhere(ota_models: Path, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    kit = S.make_kit(ota_models)
    models = {v: S.model_bytes(ota_models, v) for v in ("v1", "v2", "v3")}
    shas = {hashlib.sha256(b).hexdigest(): v for v, b in models.items()}
    template = tmp_path / "template"
    S.provision(template, ota_models)
    scenarios = {
        "full": ("v2", kit.release("v2", 2), None, "committed"),
        "delta": ("v2", kit.release("v2", 2, previous="v1"), "v1", "committed"),
        "health-fail": ("v3", kit.release("v3", 2), None, "reverted"),
    }
    kills = 0
    outcomes: dict[str, int] = {}
    with RS.RangeServer() as server:
        server.add_token(S.TOKEN, S.DEVICE_ID)
        jobs: dict[str, tuple[Path, str, int, float]] = {}
        for name, (version, release, base, _) in scenarios.items():
            fields = S.publish(
                server, release, name=name, artifact=models[version], base=models[base] if base else None
            )
            job = tmp_path / f"{name}.json"
            job.write_text(
                json.dumps(
                    {
                        "hardware_class": S.HARDWARE_CLASS,
                        "root_public_key": kit.root_public.hex(),
                        "token": S.TOKEN,
                        "device_id": S.DEVICE_ID,
                        "command": S.update_command(fields, f"cmd-{name}").model_dump(mode="json"),
                        "companions": {sha: str(ota_models / v) for sha, v in shas.items()},
                    }
                )
            )
            # A clean run: how many crash points it passes and how long it takes.
            flash = tmp_path / f"clean-{name}"
            shutil.copytree(template, flash)
            start = time.monotonic()
            status, result = _run(flash, job, count=True)
            assert status == "done" and result["state"] == scenarios[name][3], result
            jobs[name] = (job, f"/releases/{name}/", result["points"], time.monotonic() - start)

        deadline = time.monotonic() + 150  # bounded: stop early on a slow machine, never hang
        for i in range(KILLS):
            if time.monotonic() > deadline:
                break
            name = list(scenarios)[i % len(scenarios)]
            version, _, _, expected = scenarios[name]
            job, prefix, points, clean_s = jobs[name]
            flash = tmp_path / f"seq-{i}"
            shutil.copytree(template, flash)
            floor = [1]
            committed_at: int | None = None  # artifact requests when the commit became durable

            def artifact_requests(prefix: str = prefix) -> int:
                return len(
                    [
                        r
                        for r in server.requests()
                        if r.path.startswith(prefix) and not r.path.endswith("manifest.json")
                    ]
                )

            chained = i % 5 == 4
            for power_on in range(12):
                if power_on == 0 or (chained and power_on == 1):
                    if i % 2 == 0:
                        status, result = _run(flash, job, crash_at=rng.randint(1, points))
                    else:
                        status, result = _run(flash, job, kill_after=rng.uniform(0.05, clean_s))
                else:
                    status, result = _run(flash, job)
                if status == "killed":
                    kills += 1
                    counter = _check_device(flash, shas, floor, tmp_path)
                    if counter >= 2 and committed_at is None:
                        committed_at = artifact_requests()
                    elif committed_at is not None:
                        assert artifact_requests() == committed_at, "a committed release was downloaded again"
                    continue
                assert result["state"] == expected, (name, i, result)
                break
            else:
                pytest.fail(f"sequence {i} ({name}) did not settle in 12 power-ons")
            if committed_at is not None:
                assert artifact_requests() == committed_at, "a committed release was downloaded again"
            # Settled: the device runs what it should, and one more power-on changes nothing.
            final = models[version] if expected == "committed" else models["v1"]
            assert S.active_sha(flash) == hashlib.sha256(final).hexdigest()
            S.run_litert(flash / f"slot_{read_copies(flash)[0].active}.bin")
            before = artifact_requests()
            assert _run(flash, job)[1]["state"] == expected
            assert artifact_requests() == before
            outcomes[name] = outcomes.get(name, 0) + 1
    print(f"\nOTA client power loss: {kills} kills over {sum(outcomes.values())} sequences {outcomes}")
    assert kills >= min(KILLS, sum(outcomes.values())) // 2
    assert sum(outcomes.values()) >= min(KILLS, 12)
