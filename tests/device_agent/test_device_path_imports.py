"""What the running agent imports: never TensorFlow, and on its steady path (model loaded, connected,
inferring, no OTA in progress) neither pydantic, cryptography nor bsdiff4 — the ~15 MB of pydantic is
what kept the Pi-class agent above its 50 MB RSS target (bench/RESULTS-agent.md).

1. A child process runs the whole :class:`~device_agent.agent.Agent` as ``tinyfleet agent`` does (slot
   store provisioned and booted, disk buffer, OTA client lazy, paho link) against a real Mosquitto (a
   private one, else the system broker on 127.0.0.1:1883), on a simulated board fed with the chain's
   golden inputs. It infers, publishes windows (checked as they arrive at a subscriber), answers a
   Ping sent over the broker (the Status reply is checked), then reports ``sys.modules``.
2. A child imports *every* device_agent module (OTA client, health check and fleet simulator included)
   and runs the inference loop: TensorFlow and cryptography stay out, and the only modules holding
   pydantic models are the OTA-time / simulator ones pinned below (loaded when an update or rollback
   actually happens, or by the fleet simulator — the documented trade-off in docs/device-agent.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SUPPORT = HERE.parent / "support"
sys.path.insert(0, str(SUPPORT))

from mosquitto_broker import SYSTEM_BROKER, MosquittoBroker, mosquitto_available, port_open  # noqa: E402

# Heavy packages the steady agent must not have loaded.
NOT_ON_STEADY_PATH = (
    "pydantic", "pydantic_core", "cryptography", "bsdiff4", "tensorflow", "keras", "sklearn",
)  # fmt: skip

# Importing every device_agent module also loads the OTA-time code (manifest, certificates, revocation,
# the golden health check) and the fleet simulator; these may hold pydantic models, nothing else may.
OTA_TIME_OR_SIMULATOR = frozenset(
    {
        "converters.features",  # the fleet simulator's sensor features
        "device_agent.health_check",  # run on an OTA trial
        "device_agent.simulator",  # the fleet simulator, not a device
        "ota.certificates",
        "ota.fields",
        "ota.manifest",
        "ota.revocation",
    }
)

AGENT_CHILD = textwrap.dedent(
    """
    import json, sys, tempfile, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[4])
    import numpy as np
    from mosquitto_broker import MqttCollector
    from device_agent.agent import Agent, AgentOptions
    from device_agent.config import AgentConfig, BrokerConfig, LoopConfig
    from device_agent.model_manager import ModelChain
    from firmware_stubs.board import SimulatedBoard
    from firmware_stubs.flash import FlashArea
    from firmware_stubs.hardware_profiles import get_profile
    from firmware_stubs.sensor_streams import SensorStream, StreamPools, WindowPool
    from telemetry import device_codec as dc
    from telemetry.topics import cmd_topic, status_topic, telemetry_topic

    chain_dir, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dev = "imports-check-1"
    prof = get_profile("pi-zero-2w")
    chain = ModelChain.from_dir(chain_dir)
    with np.load(chain.levels[0].directory / "golden.npz") as z:
        x, y = z["inputs"], z["labels"]
    pool = WindowPool(windows=x, labels=y, is_event=np.isin(y, chain.rule.positive_class_ids), name="golden")
    state = tempfile.mkdtemp()
    board = SimulatedBoard(prof, stream=SensorStream(StreamPools(nominal=pool)),
                           flash=FlashArea.for_profile(prof, state + "/flash"))
    cfg = AgentConfig(device_id=dev, hardware_class=prof.name, model_dir=chain_dir, state_dir=state,
                      broker=BrokerConfig(url=f"mqtt://{host}:{port}"),
                      loop=LoopConfig(sample_period_s=1.0, window_s=10.0))
    col = MqttCollector(host, port, [telemetry_topic(dev), status_topic(dev)], client_id=f"col-{dev}",
                        clean_session=True)
    agent = Agent(cfg, AgentOptions(board=board, buffer_fsync=False))
    agent.start()
    agent.run_for(60)

    def decoded(topic):
        return [dc.decode(m.payload) for m in col.snapshot() if m.topic == topic]

    windows_seen = col.wait_for(lambda ms: len(decoded(telemetry_topic(dev))) >= 3, 20)
    ping = json.dumps({"v": 1, "type": "cmd.ping", "device_id": dev, "cmd_id": "ping-1", "ts": 1}).encode()
    col.client.publish(cmd_topic(dev), ping, qos=1)
    deadline = time.monotonic() + 20
    replied = False
    while not replied and time.monotonic() < deadline:
        agent.step()  # the loop thread runs queued commands at each wake
        replied = any(getattr(s, "reply_to", None) == "ping-1" for s in decoded(status_topic(dev)))
        time.sleep(0.02)
    tel = decoded(telemetry_topic(dev))
    out = {
        "windows_seen": windows_seen, "replied": replied, "connected": agent.link.connected,
        "inferences": agent.loop.stats.inferences, "cmd_received": agent.intake.counters.received,
        "window_types": sorted({t.type for t in tel}),
        "max_window_bytes": max((len(m.payload) for m in col.snapshot() if m.topic == telemetry_topic(dev)),
                                default=0),
        "loaded": {name: name in sys.modules for name in sys.argv[5].split(",")},
        "project_modules": sorted(n for n in sys.modules
                                  if n.split(".")[0] in ("device_agent", "ota", "converters", "telemetry")),
    }
    agent.stop()
    col.close()
    print(json.dumps(out))
    """
)

ALL_MODULES_CHILD = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
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


def _run(child: str, *args: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", child, *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_running_agent_process_imports_no_pydantic_cryptography_bsdiff4_or_tensorflow(
    chain_dir: Path, tmp_path: Path
) -> None:
    if mosquitto_available():
        broker: MosquittoBroker | None = MosquittoBroker(tmp_path / "broker")
        broker.start()
        host, port = broker.host, broker.port
    elif port_open(*SYSTEM_BROKER):
        broker, (host, port) = None, SYSTEM_BROKER
    else:
        pytest.skip("no mosquitto binary and no broker on 127.0.0.1:1883")
    try:
        out = _run(AGENT_CHILD, str(chain_dir), host, str(port), str(SUPPORT), ",".join(NOT_ON_STEADY_PATH))
    finally:
        if broker is not None:
            broker.stop()
    # It really ran: connected, inferred, windows arrived at the broker, the Ping was answered.
    assert out["connected"] and out["windows_seen"] and out["replied"], out
    assert out["inferences"] >= 60 and out["cmd_received"] >= 1
    assert out["window_types"] == ["metrics"] and 0 < out["max_window_bytes"] <= 256
    loaded = {name for name, is_loaded in out["loaded"].items() if is_loaded}
    assert not loaded, f"the steady agent imported {sorted(loaded)}; modules loaded: {out['project_modules']}"
    # The OTA-time code stays out until an update or rollback happens.
    ota_time = {"ota.manifest", "ota.trust", "ota.delta", "device_agent.ota_client"}
    assert not (ota_time | {"device_agent.health_check"}) & set(out["project_modules"])


def test_every_device_module_imports_no_tensorflow_and_pydantic_only_in_ota_time_code(
    chain_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "chain").symlink_to(chain_dir)
    out = _run(ALL_MODULES_CHILD, str(chain_dir), str(tmp_path))
    assert out["windows"] >= 2 and out["inferences"] == 25 and out["cmd"] == "cmd.ping"
    assert out["window_type"] == "telemetry.device_codec" and out["window_bytes"] <= 256
    assert out["tensorflow"] is False
    assert out["cryptography"] is False, "cryptography must load only when an update is verified"
    users = set(out["pydantic_users"])
    extra = sorted(users - OTA_TIME_OR_SIMULATOR)
    assert not extra, f"pydantic models outside the OTA-time / simulator code: {extra}"
