"""What the running agent's path imports: never TensorFlow, cryptography only when an update is verified,
and pydantic in none of the agent's own telemetry/config/loop modules.

A child process imports every module of the device_agent package, runs inferences through a real
InferenceLoop (LiteRT, the test chain), encodes the window and a fallback event with the device codec,
decodes a command, loads a device.toml, and reports ``sys.modules``. Pydantic is still pulled in by
modules outside this path's owners (converters' report model, the simulated board, the disk buffer's
and MQTT link's settings, the OTA client's persisted record, the fleet simulator): the child names every
module whose namespace holds a pydantic model, and the test pins that list, so the agent's own
modules stay clean and the remaining users are visible (remove a name here when its module drops
pydantic).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Modules (not owned by the lean-agent work) that still define or hold pydantic models on import.
KNOWN_PYDANTIC_USERS = frozenset(
    {
        "converters.config",
        "converters.features",
        "converters.report",
        "device_agent.disk_buffer",
        "device_agent.health_check",
        "device_agent.model_manager",
        "device_agent.mqtt_link",
        "device_agent.ota_state",
        "device_agent.simulator",
        "firmware_stubs.board",
        "firmware_stubs.power",
        "firmware_stubs.sensor_streams",
        "ota.certificates",
        "ota.fields",
        "ota.manifest",
        "ota.revocation",
        "ota.slot_state",
        "telemetry.schemas",  # imported by device_agent.agent (Status, ErrorEvent) and ota_state (OtaState)
    }
)
# The agent's path as this work owns it: none of these may hold a pydantic model.
PYDANTIC_FREE = (
    "device_agent.commands",
    "device_agent.config",
    "device_agent.energy_policy",
    "device_agent.fallback",
    "device_agent.inference_loop",
    "device_agent.ota_client",
    "device_agent.publisher",
    "device_agent.sections",
    "device_agent.shadow",
    "telemetry.aggregation",
    "telemetry.device_codec",
    "telemetry.wire",
)

CHILD = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys, tempfile
    from pathlib import Path
    import device_agent, device_agent.runtime
    for pkg in (device_agent, device_agent.runtime):
        for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
            importlib.import_module(info.name)
    from device_agent.config import LoopConfig, load_config
    from device_agent.inference_loop import InferenceLoop
    from device_agent.model_manager import ModelChain, ModelManager
    from firmware_stubs.board import make_simulated_board
    from firmware_stubs.hardware_profiles import PI_ZERO_2W
    from telemetry import device_codec as dc

    chain_dir, work = sys.argv[1], Path(sys.argv[2])
    toml = work / "device.toml"
    toml.write_text('device_id = "d1"\\nhardware_class = "pi-zero-2w"\\nmodel_dir = "chain"\\n')
    cfg = load_config(toml)
    chain = ModelChain.from_dir(chain_dir)
    board = make_simulated_board(PI_ZERO_2W, task="digits", flash_root=work / "flash")
    windows, events = [], []
    loop = InferenceLoop(board, ModelManager(PI_ZERO_2W, chain), device_id="d1", sink=windows.append,
                         event_sink=events.append, config=LoopConfig(sample_period_s=1.0, window_s=10.0))
    loop.start()
    loop.run(steps=25)
    payload = dc.encode(windows[0])
    ping = b'{"v":1,"type":"cmd.ping","device_id":"d1","cmd_id":"p1","ts":1}'
    cmd = dc.decode_command(ping, device_id="d1")
    from pydantic import BaseModel
    users = sorted(
        name for name, mod in list(sys.modules.items())
        if name.split(".")[0] in ("device_agent", "telemetry", "converters", "firmware_stubs", "ota")
        and any(isinstance(v, type) and issubclass(v, BaseModel) and v.__module__ == name
                for v in vars(mod).values())
    )
    print(json.dumps({
        "windows": len(windows), "window_bytes": len(payload), "cmd": cmd.type,
        "inferences": loop.stats.inferences, "window_type": type(windows[0]).__module__,
        "tensorflow": "tensorflow" in sys.modules, "cryptography": "cryptography" in sys.modules,
        "pydantic_users": users,
    }))
    """
)


def test_agent_path_imports_no_tensorflow_no_cryptography_and_pydantic_only_outside_it(
    chain_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "chain").symlink_to(chain_dir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(chain_dir), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["windows"] >= 2 and out["inferences"] == 25 and out["cmd"] == "cmd.ping"
    assert out["window_type"] == "telemetry.device_codec" and out["window_bytes"] <= 256
    assert out["tensorflow"] is False
    assert out["cryptography"] is False, "cryptography must load only when an update is verified"
    users = set(out["pydantic_users"])
    assert not users & set(PYDANTIC_FREE), f"pydantic crept into the agent path: {users & set(PYDANTIC_FREE)}"
    assert users == KNOWN_PYDANTIC_USERS, (
        f"new pydantic users: {sorted(users - KNOWN_PYDANTIC_USERS)}; "
        f"no longer users (drop from the list): {sorted(KNOWN_PYDANTIC_USERS - users)}"
    )
