"""One power-on of a simulated device, for the power-loss test (run as a separate process).

The device boots (SlotStore.boot), runs whatever its persisted state says comes next -- a trial's
health check and commit/revert, a pending download to resume, or a fresh install of the release in
``--release`` -- simulates the reboot into the new slot, and exits 0 when nothing is left to do.

``--crash-at N`` SIGKILLs this process at the N-th crash point (every fsync, rename and chunk write
of the slot store, see ota.crashpoints), writing ``phase:label`` to stderr first so the parent can
tell where it died. A run that completes prints JSON with the number of crash points it passed.

Imports only ota, numpy and (for the health check) ai_edge_litert: no TensorFlow, so a run is fast.

``--serve`` turns this script into a zygote for the test: it imports everything once, then for each
JSON line on stdin (the argument list of one power-on) forks a fresh child that runs it, and reports
``PID``, the child's ``CRASH``/``RESULT``/``ERROR`` lines and ``EXIT <pid> <code>`` on stdout. Each
power-on is still a separate process killed for real; it just skips ~0.3 s of interpreter start-up
and imports, so hundreds of kills fit in the test's time budget.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import traceback
from pathlib import Path

from ota import crashpoints
from ota.installer import Installer, file_source
from ota.slots import SlotStore
from ota.trust import DeviceTrust

phase = "start"
points = 0
serving = False


def _hook_factory(crash_at: int | None):
    def hook(label: str) -> None:
        global points
        points += 1
        if crash_at is not None and points >= crash_at:
            os.write(2 if not serving else 1, f"CRASH {phase}:{label}\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def health_check(model_path: Path, want_healthy: bool) -> bool:
    """The agent's check: the model loads in LiteRT and gives finite output (--health fail: a bad model)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=np.float32))
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return bool(np.all(np.isfinite(out))) and want_healthy


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--release", type=Path, required=True)
    ap.add_argument("--mode", choices=["full", "delta"], default="full")
    ap.add_argument("--health", choices=["ok", "fail"], default="ok")
    ap.add_argument("--crash-at", type=int)
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--checkpoint-bytes", type=int, default=256)
    ap.add_argument("--capacity", type=int, default=64 * 1024 * 1024)
    return ap.parse_args(argv)


def power_on(args: argparse.Namespace) -> dict:
    """One device start: boot, then whatever the persisted state says comes next."""
    global phase
    crashpoints.set_hook(_hook_factory(args.crash_at))

    device = json.loads((args.release / "device.json").read_text())
    trust = DeviceTrust(
        root_public_keys=[bytes.fromhex(device["root_public_key"])],
        hardware_class=device["hardware_class"],
        installed_counter=0,  # the installer takes the counter from the store
    )
    store = SlotStore(args.store, capacity=args.capacity, checkpoint_bytes=args.checkpoint_bytes)
    installer = Installer(store, trust, write_chunk=args.chunk)
    artifact = file_source(args.release / "artifact.bin", args.chunk)
    patch = file_source(args.release / "patch.bin", args.chunk) if args.mode == "delta" else None
    manifest = (args.release / "manifest.json").read_bytes()
    events: list[str] = []

    phase = "boot"
    decision = store.boot()
    if decision.event:
        events.append(decision.event)
    state = store.state
    if not state.trial:
        if state.pending is not None:
            phase = "resume"
            plan = installer.plan(
                base64.b64decode(state.pending.manifest_b64),
                allow_delta=state.pending.kind == "delta",
            )
        elif state.installed_counter < 2 and not state.is_refused(2):
            phase = "plan"
            plan = installer.plan(manifest, allow_delta=patch is not None)
        else:
            plan = None
        if plan is not None:
            phase = "download"
            installer.download(plan, patch if plan.kind == "delta" else artifact)
            phase = "verify"
            installer.verify(plan)
            phase = "switch"
            installer.activate()
            phase = "reboot"  # the device restarts into the new slot
            decision = store.boot()
            if decision.event:
                events.append(decision.event)
    if store.state.trial:
        phase = "health"
        healthy = health_check(decision.path, args.health == "ok")
        phase = "commit" if healthy else "revert"
        installer.finish_trial(healthy=healthy)
    phase = "done"
    final = store.state
    return {"points": points, "active": final.active, "counter": final.installed_counter, "events": events}


def serve() -> int:
    """Zygote: fork one child per power-on request read from stdin (see the module docstring)."""
    global serving
    serving = True
    import numpy  # noqa: F401  (preloaded for the children's health check)
    from ai_edge_litert import interpreter  # noqa: F401

    print("READY", flush=True)
    for line in sys.stdin:
        argv = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.write(1, f"RESULT {json.dumps(power_on(parse(argv)))}\n".encode())
            except BaseException:
                os.write(1, ("ERROR " + json.dumps(traceback.format_exc()) + "\n").encode())
                code = 1
            os._exit(code)
        print(f"PID {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"EXIT {pid} {os.waitstatus_to_exitcode(status)}", flush=True)
    return 0


def main() -> int:
    if sys.argv[1:] == ["--serve"]:
        return serve()
    args = parse(None)
    print(json.dumps(power_on(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
