"""The agent must never import TensorFlow (a Pi Zero cannot afford it): import every module of
device_agent in a fresh interpreter and look at sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import importlib, json, pkgutil, sys
import device_agent
names = sorted(m.name for m in pkgutil.walk_packages(device_agent.__path__, "device_agent."))
for name in names:
    importlib.import_module(name)
heavy = sorted(m for m in ("tensorflow", "keras", "sklearn", "tf_keras") if m in sys.modules)
print(json.dumps({"modules": names, "heavy": heavy}))
"""


def test_importing_all_of_device_agent_pulls_in_no_tensorflow() -> None:
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "device_agent.inference_loop" in out["modules"] and "device_agent.runtime.tflm" in out["modules"]
    assert out["heavy"] == []
