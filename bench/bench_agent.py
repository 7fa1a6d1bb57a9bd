"""Device agent benchmark: per-inference overhead vs a bare interpreter, and steady RSS of an agent process.

    .venv/bin/python bench/bench_agent.py --chain DIR [--hardware pi-zero-2w] [--json]
        [--before-rev GITREV] [--no-rss]

``--chain`` is a fallback chain directory (chain.json + artifacts), e.g. one written by
``converters.reference.chain.build_reference_chain``; without it the digits reference chain is built
into build/bench-agent/digits first (needs TensorFlow in *this* process; the RSS child never imports it).

1. Overhead. Baseline, measured in the same run on the same model and inputs: a bare LiteRT
   interpreter loop (set_tensor of an already quantized input, invoke, get_tensor). Then the agent's
   per-inference path on the same samples: ``InferenceLoop.process`` (quantize, invoke, dequantize,
   decision, input feature summary, window aggregation, energy accounting on the simulated board)
   and, separately, the runtime adapter alone (``ModelManager.infer``). Medians of repeated passes.
   ``--before-rev`` also times ``InferenceLoop.process`` as it was at a git revision (read with
   ``git show``), interleaved in the same blocks. The overhead is also given relative to the simulated
   on-device invoke (host invoke x ``host_slowdown``) of every hardware class.
2. RSS. A child process imports the agent, loads the chain's primary model on the Pi-class path, runs
   the loop for a while and reports VmRSS / VmHWM from /proc/self/status, and whether TensorFlow was
   imported. Baselines in the same run: a bare Python, and Python + numpy + LiteRT with the model; and
   the pydantic-free agent parts on their own ("lean-parts").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 50

RSS_CHILD = r"""
import json, sys, tempfile
def rss():
    d = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            d[k] = int(v.split()[0])
    return d
mode, chain, hw = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
if mode == "agent":
    # The agent's imports only; sensor windows come from the primary model's golden inputs, so the
    # simulator does not pull in scikit-learn (which a real board would not have either).
    import numpy as np
    from device_agent.config import LoopConfig
    from device_agent.inference_loop import InferenceLoop
    from device_agent.model_manager import ModelChain, ModelManager
    from firmware_stubs.board import SimulatedBoard
    from firmware_stubs.flash import FlashArea
    from firmware_stubs.hardware_profiles import get_profile
    from firmware_stubs.sensor_streams import SensorStream, StreamPools, WindowPool
    prof = get_profile(hw)
    chain = ModelChain.from_dir(chain)
    with np.load(chain.levels[0].directory / "golden.npz") as z:
        x, y = z["inputs"], z["labels"]
    pool = WindowPool(windows=x, labels=y, is_event=np.isin(y, chain.rule.positive_class_ids), name="golden")
    board = SimulatedBoard(prof, stream=SensorStream(StreamPools(nominal=pool)),
                           flash=FlashArea.for_profile(prof, tempfile.mkdtemp()))
    windows = []
    loop = InferenceLoop(board, ModelManager(prof, chain), device_id="bench-1", sink=windows.append,
                         config=LoopConfig(sample_period_s=1.0, window_s=60))
    loop.start()
    loop.run(steps=3000)
    out["windows"] = len(windows)
elif mode == "agent-process":
    # The whole Agent as `tinyfleet agent` runs it (slot store provisioned and booted, OTA client, disk
    # buffer, paho link thread connected to argv[4] or buffering if none listens), on the same golden-input
    # board as "agent" so scikit-learn stays out; RSS read after 500 inferences with the link still up.
    import numpy as np
    from device_agent.agent import Agent, AgentOptions
    from device_agent.config import AgentConfig, BrokerConfig, LoopConfig
    from device_agent.model_manager import ModelChain
    from firmware_stubs.board import SimulatedBoard
    from firmware_stubs.flash import FlashArea
    from firmware_stubs.hardware_profiles import get_profile
    from firmware_stubs.sensor_streams import SensorStream, StreamPools, WindowPool
    prof = get_profile(hw)
    mchain = ModelChain.from_dir(chain)
    with np.load(mchain.levels[0].directory / "golden.npz") as z:
        x, y = z["inputs"], z["labels"]
    pool = WindowPool(windows=x, labels=y, is_event=np.isin(y, mchain.rule.positive_class_ids), name="golden")
    state = tempfile.mkdtemp()
    board = SimulatedBoard(prof, stream=SensorStream(StreamPools(nominal=pool)),
                           flash=FlashArea.for_profile(prof, state + "/flash"))
    broker = sys.argv[4] if len(sys.argv) > 4 else "mqtt://127.0.0.1:1"
    cfg = AgentConfig(device_id="bench-rss-1", hardware_class=hw, model_dir=chain, state_dir=state,
                      broker=BrokerConfig(url=broker), loop=LoopConfig(sample_period_s=1.0, window_s=60))
    agent = Agent(cfg, AgentOptions(board=board, buffer_fsync=False))
    agent.start()
    agent.run_for(500)
    import time as _t
    agent.link.wait_drained(5)
    _t.sleep(0.5)
    out["windows"] = agent.loop.stats.windows
    out["inferences"] = agent.loop.stats.inferences
    out["connected"] = agent.link.connected  # RSS read below with the link thread still running
elif mode == "lean-parts":
    # The pydantic-free parts of the agent path on their own: config, fallback policy, command intake,
    # LiteRT runtime adapter, window aggregation and the device codec (no model manager / converters
    # report / simulated board / disk buffer / MQTT link, which still define pydantic models).
    import json as _json
    from pathlib import Path
    import numpy as np
    from device_agent.commands import CommandIntake
    from device_agent.config import AgentConfig
    from device_agent.fallback import FallbackPolicy
    from device_agent.runtime.litert import LiteRTRuntime
    from telemetry import device_codec as dc
    from telemetry.aggregation import WindowAggregator
    d = Path(chain)
    cfg = AgentConfig(device_id="bench-lean", hardware_class=hw, model_dir=d)
    entries = sorted(_json.loads((d / "chain.json").read_text())["entries"], key=lambda e: e["rank"])
    art = d / entries[0]["artifact_dir"]
    variant = _json.loads((art / "report.json").read_text())["hardware_fit"][hw]["default_variant"]
    rt = LiteRTRuntime()
    rt.load((art / f"{variant}.tflite").read_bytes())
    x = np.zeros(rt.input_spec.shape[1:], np.float32)
    policy = FallbackPolicy(3, cfg.fallback)
    intake = CommandIntake(cfg.device_id)
    agg = WindowAggregator(cfg.device_id, dc.ModelRef(name="m", version=1, variant=variant),
                           input_edges=[0.0, 0.5, 1.0], input_feature=0)
    agg.open(1000.0)
    t = 1000.0
    for i in range(3000):
        inv = rt.invoke(x)
        agg.record_inference(inv.invoke_ns // 1000, False, output_score=float(inv.scores.max()),
                             input_value=0.1)
        if i % 60 == 59:
            t += 60
            dc.encode(agg.close_record(t, battery_pct=50.0))
    intake.handle(b'{"v":1,"type":"cmd.ping","device_id":"bench-lean","cmd_id":"p1","ts":1}')
elif mode in ("litert", "litert+pydantic", "litert+paho"):
    import json as _json
    from pathlib import Path
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    if mode == "litert+paho":  # the MQTT client library every agent needs (it imports ssl, urllib, email)
        import paho.mqtt.client as _mqtt
        _client = _mqtt.Client(_mqtt.CallbackAPIVersion.VERSION2, client_id="bench-floor")
    if mode == "litert+pydantic":
        from pydantic import BaseModel
        class One(BaseModel):  # the first model class loads pydantic's schema generator
            x: int
    d = Path(chain)
    entries = sorted(_json.loads((d / "chain.json").read_text())["entries"], key=lambda e: e["rank"])
    art = d / entries[0]["artifact_dir"]
    variant = _json.loads((art / "report.json").read_text())["hardware_fit"][hw]["default_variant"]
    it = Interpreter(model_path=str(art / f"{variant}.tflite"), num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    x = np.zeros(inp["shape"], inp["dtype"])
    for _ in range(3000):
        it.set_tensor(inp["index"], x); it.invoke()
out.update(rss())
out["tensorflow_imported"] = "tensorflow" in sys.modules
out["sklearn_imported"] = "sklearn" in sys.modules
out["pydantic_imported"] = "pydantic" in sys.modules
out["cryptography_imported"] = "cryptography" in sys.modules
print(json.dumps(out))
"""


def rss_of(mode: str, chain: Path, hw: str, broker: str = "mqtt://127.0.0.1:1883",
           pythonpath: str | None = None) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if pythonpath:  # an older source tree first on sys.path (ahead of the editable install)
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.run([sys.executable, "-c", RSS_CHILD, mode, str(Path(chain).resolve()), hw, broker],
                          capture_output=True, text=True, env=env, timeout=600, check=False,
                          cwd=pythonpath or None)
    if proc.returncode != 0:
        raise SystemExit(f"RSS child ({mode}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class _AccountingFreeBoard:
    """The simulated board minus the simulator's own per-inference work (power model, ground-truth
    bookkeeping for feedback): what the agent itself costs on a board whose energy accounting is free."""

    def __init__(self, board: Any) -> None:
        from firmware_stubs.board import EnergyUse

        self._board = board
        self._use = EnergyUse(device_active_s=0.0, radio_s=0.0, charge_mah=0.0)
        self.profile, self.clock, self.storage = board.profile, board.clock, board.storage

    def read_sensor(self) -> Any:
        return self._board.read_sensor()

    def battery(self) -> Any:
        return self._board.battery()

    def record_energy(self, *, active_seconds: float = 0.0, radio_bytes: int = 0) -> Any:
        return self._use

    def report_detection(self, sample_index: int) -> None:
        pass

    def poll_feedback(self) -> list:
        return []

    def reboot(self) -> None:
        pass


def load_loop_at(rev: str) -> Any:
    """``device_agent.inference_loop`` as it was at git revision ``rev`` (read-only ``git show``), loaded
    as a separate module: the "before" path, measured in the same run as the current one."""
    import types

    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:device_agent/inference_loop.py"],
                         capture_output=True, text=True, check=True).stdout
    mod = types.ModuleType(f"inference_loop_at_{rev}")
    mod.__file__ = f"<{rev}:device_agent/inference_loop.py>"
    sys.modules[mod.__name__] = mod  # dataclasses look their module up while building the classes
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


def overhead(chain: Path, hw: str, n: int, repeats: int, before_rev: str | None = None) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    from device_agent.config import LoopConfig
    from device_agent.inference_loop import InferenceLoop
    from device_agent.model_manager import ModelChain, ModelManager
    from device_agent.runtime.base import quantize, spec_from_details
    from firmware_stubs.board import make_simulated_board
    from firmware_stubs.hardware_profiles import get_profile

    prof = get_profile(hw)
    mchain = ModelChain.from_dir(chain)
    board = make_simulated_board(prof, task=mchain.task, flash_root=tempfile.mkdtemp())
    manager = ModelManager(prof, mchain)
    loop = InferenceLoop(board, manager, device_id="bench-1", sink=lambda _w: None,
                         config=LoopConfig(sample_period_s=1.0, window_s=1e4))
    model = loop.start()
    samples = [board.read_sensor() for _ in range(n)]
    lean = InferenceLoop(_AccountingFreeBoard(board), ModelManager(prof, mchain), device_id="bench-2",
                         sink=lambda _w: None, config=LoopConfig(sample_period_s=1.0, window_s=1e4))
    lean.start()
    before = None
    if before_rev is not None:
        old = load_loop_at(before_rev)
        before = old.InferenceLoop(board, ModelManager(prof, mchain), device_id="bench-0",
                                   sink=lambda _w: None, config=LoopConfig(sample_period_s=1.0, window_s=1e4))
        before.start()

    bare = Interpreter(model_content=model.artifact.model_bytes, num_threads=1)
    bare.allocate_tensors()
    ind, outd = bare.get_input_details()[0], bare.get_output_details()[0]
    spec = spec_from_details(ind)
    xq = [quantize(s.window, spec) for s in samples]
    i_in, i_out = ind["index"], outd["index"]

    def run_bare(lo: int, hi: int) -> None:
        for j in range(lo, hi):
            bare.set_tensor(i_in, xq[j])
            bare.invoke()
            bare.get_tensor(i_out)

    def run_adapter(lo: int, hi: int) -> None:
        for j in range(lo, hi):
            manager.infer(samples[j].window)

    def run_agent(lo: int, hi: int) -> None:
        for j in range(lo, hi):
            loop.process(samples[j])

    def run_lean(lo: int, hi: int) -> None:
        for j in range(lo, hi):
            lean.process(samples[j])

    def run_before(lo: int, hi: int) -> None:
        for j in range(lo, hi):
            before.process(samples[j])

    paths = [run_bare, run_adapter, run_agent, run_lean] + ([run_before] if before is not None else [])
    for f in paths:  # warm-up
        f(0, min(n, 200))
    # Blocks of BLOCK calls, interleaved (bare, adapter, agent, bare, ...), so load from other processes
    # on this shared machine hits all three alike while each block runs with its own model warm in
    # cache; the figure is the median over blocks of the mean time per call.
    bare_ns: list[float] = []
    adapter_ns: list[float] = []
    agent_ns: list[float] = []
    lean_ns: list[float] = []
    before_ns: list[float] = []
    clock = time.perf_counter_ns
    timed = [(run_bare, bare_ns), (run_adapter, adapter_ns), (run_agent, agent_ns), (run_lean, lean_ns)]
    if before is not None:
        timed.append((run_before, before_ns))
    for _ in range(repeats):
        for start in range(0, n - BLOCK + 1, BLOCK):
            for fn, out in timed:
                t0 = clock()
                fn(start, start + BLOCK)
                out.append((clock() - t0) / BLOCK)
    b, a, g, le = (statistics.median(v) / 1000 for v in (bare_ns, adapter_ns, agent_ns, lean_ns))
    from firmware_stubs.hardware_profiles import PROFILES

    # What a device pays: the on-device invoke is the host invoke x host_slowdown (the power model's
    # rule); the agent's Python is counted at host speed here (on a real board it is slower too, which
    # leaves the host ratio above as the upper bound).
    per_class = {
        name: {
            "host_slowdown": p.host_slowdown,
            "device_invoke_us": round(b * p.host_slowdown, 1),
            "agent_overhead_pct_of_device_invoke": round(100 * (g - b) / (b * p.host_slowdown), 2),
        }
        for name, p in PROFILES.items()
    }
    extra: dict[str, Any] = {"per_hardware_class": per_class}
    if before is not None:
        bf = statistics.median(before_ns) / 1000
        extra.update({
            "before_rev": before_rev, "before_process_us": round(bf, 2),
            "before_overhead_pct": round(100 * (bf - b) / b, 1), "before_overhead_abs_us": round(bf - b, 2),
        })
    return extra | {
        "model": model.label, "hardware": hw, "samples": n, "repeats": repeats,
        "bare_invoke_us": round(b, 2), "adapter_us": round(a, 2), "agent_process_us": round(g, 2),
        "adapter_overhead_pct": round(100 * (a - b) / b, 1),
        "agent_overhead_pct": round(100 * (g - b) / b, 1),
        "agent_overhead_abs_us": round(g - b, 2),
        "agent_no_sim_accounting_us": round(le, 2),
        "agent_no_sim_accounting_overhead_pct": round(100 * (le - b) / b, 1),
    }


def ensure_chain(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    out = ROOT / "build" / "bench-agent" / "digits"
    if not (out / "chain.json").is_file():
        from converters.reference.chain import build_reference_chain

        print(f"building the digits reference chain into {out} …", file=sys.stderr)
        build_reference_chain("digits", out, overwrite=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chain", help="fallback chain directory (default: build the digits reference chain)")
    ap.add_argument("--hardware", default="pi-zero-2w")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="machine output")
    ap.add_argument("--before-rev", help="also time InferenceLoop.process as it was at this git revision")
    ap.add_argument("--no-rss", action="store_true", help="skip the RSS children")
    ap.add_argument("--before-tree", help="source tree of an older revision (git archive REV | tar -x -C "
                                          "DIR): also measure the agent RSS rows with it first on sys.path")
    args = ap.parse_args()
    chain = ensure_chain(args.chain)

    ov = overhead(chain, args.hardware, args.samples, args.repeats, args.before_rev)
    modes = () if args.no_rss else (
        "python", "litert", "litert+paho", "litert+pydantic", "lean-parts", "agent", "agent-process"
    )
    rss = {mode: rss_of(mode, chain, args.hardware) for mode in modes}
    if args.before_tree and not args.no_rss:
        for mode in ("agent", "agent-process"):
            rss[f"{mode} (before)"] = rss_of(mode, chain, args.hardware, pythonpath=args.before_tree)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    result = {"chain": str(chain), "date": stamp, "overhead": ov, "rss_kb": rss}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"Per-inference cost, {ov['model']} on {ov['hardware']} "
                    f"(host µs, median of {ov['samples'] * ov['repeats']} calls)")
    for col in ("path", "µs / inference", "overhead vs bare"):
        t.add_column(col)
    t.add_row("bare LiteRT (set_tensor, invoke, get_tensor) — baseline", f"{ov['bare_invoke_us']:.2f}", "—")
    t.add_row("agent runtime adapter (ModelManager.infer)", f"{ov['adapter_us']:.2f}",
              f"{ov['adapter_overhead_pct']:+.1f} %")
    t.add_row("agent per-inference path (InferenceLoop.process)", f"{ov['agent_process_us']:.2f}",
              f"{ov['agent_overhead_pct']:+.1f} % ({ov['agent_overhead_abs_us']:+.1f} µs)")
    t.add_row("  same, board accounting free (no power model / feedback bookkeeping)",
              f"{ov['agent_no_sim_accounting_us']:.2f}",
              f"{ov['agent_no_sim_accounting_overhead_pct']:+.1f} %")
    if "before_rev" in ov:
        t.add_row(f"  same, InferenceLoop as at {ov['before_rev']} (before)",
                  f"{ov['before_process_us']:.2f}",
                  f"{ov['before_overhead_pct']:+.1f} % ({ov['before_overhead_abs_us']:+.1f} µs)")
    console.print(t)
    d = Table(title="Agent overhead relative to the simulated on-device invoke (host invoke x host_slowdown)")
    for col in ("hardware class", "host_slowdown", "on-device invoke µs", "agent overhead / device invoke"):
        d.add_column(col)
    for name, row in ov["per_hardware_class"].items():
        d.add_row(name, f"{row['host_slowdown']:g}", f"{row['device_invoke_us']:.1f}",
                  f"{row['agent_overhead_pct_of_device_invoke']:.2f} %")
    console.print(d)
    r = Table(title="Steady RSS (after 3000 inferences)")
    for col in ("process", "VmRSS MB", "VmHWM MB", "tensorflow", "pydantic", "cryptography"):
        r.add_column(col)
    names = {"python": "bare python (baseline)", "litert": "python + numpy + LiteRT + model (floor)",
             "litert+paho": "floor + paho-mqtt client (ssl, urllib, email)",
             "litert+pydantic": "floor + one pydantic model class",
             "lean-parts": "pydantic-free agent parts (config, policy, intake, runtime, aggregation, codec)",
             "agent": "agent loop, Pi-class path, model loaded",
             "agent-process": "whole Agent (slots, buffer, MQTT link; OTA client lazy), 500 inferences"}
    names |= {f"{k} (before)": f"{v} — older tree" for k, v in list(names.items()) if k.startswith("agent")}
    for mode, d in rss.items():
        mb = (f"{d['VmRSS'] / 1024:.1f}", f"{d['VmHWM'] / 1024:.1f}")
        r.add_row(names[mode], *mb, str(d["tensorflow_imported"]), str(d["pydantic_imported"]),
                  str(d["cryptography_imported"]))
    console.print(r)


if __name__ == "__main__":
    main()
