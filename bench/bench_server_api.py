"""Operator API latency under 50 concurrent clients (wrk), on SQLite and PostgreSQL.

Starts `tinyfleet server run` on a fresh database with 1,000 provisioned devices (once per database and
worker count) and drives it with `wrk -c50` (apt-get install wrk) for each route. Baseline in the same
run: a bare FastAPI app with one sync route (``def ping(): return {"status": "ok"}``) on the same
uvicorn, i.e. the floor of framework + server on this machine. Every (route, baseline) pass is
repeated ``--repeats`` times, interleaved, and the median is reported with the 1-minute load average
seen during the runs (other processes share the cores). CPU ms/request = CPU time of the server
process tree during the wrk run / requests answered (robust against a busy machine, unlike latency).
Targets from issue 5: list/get p50 < 20 ms and p99 < 100 ms.

Usage: .venv/bin/python bench/bench_server_api.py [--seconds 5] [--repeats 3] [--db sqlite|postgresql|both]
                                                  [--workers 1,2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
from postgres import postgres_reachable, postgres_schema_url  # noqa: E402

N_DEVICES = 1000
CONNECTIONS = 50
SERVER = "from fleet_server.cli.server_commands import server_app; server_app()"
BARE = """
import sys, uvicorn
from fastapi import FastAPI
app = FastAPI()
@app.get("/ping")
def ping() -> dict[str, str]:
    return {"status": "ok"}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""
GET_LUA = """
math.randomseed(42)
request = function()
  return wrk.format("GET", string.format("/api/v1/devices/dev-%04d", math.random(0, LAST)))
end
""".replace("LAST", str(N_DEVICES - 1))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo += [int(c) for c in task.read_text().split()]
    return pids


def _cpu_s(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def wrk(url: str, seconds: int, pid: int, token: str | None, lua: Path | None = None) -> dict[str, float]:
    cmd = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    if lua:
        cmd += ["-s", str(lua)]
    cpu0 = _cpu_s(pid)
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    cpu = _cpu_s(pid) - cpu0
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", out, re.M))
    if set(pct) != {"50", "90", "99"}:
        raise RuntimeError(f"wrk gave no latency figures for {url}:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    answered = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _ms(pct["50"]),
        "p90": _ms(pct["90"]),
        "p99": _ms(pct["99"]),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
        "cpu_ms": 1000 * cpu / max(answered, 1),
        "load": os.getloadavg()[0],
    }


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"server at {url} did not start")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def bare_server() -> Iterator[tuple[str, int]]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_up(f"http://127.0.0.1:{port}/ping", proc)
        yield f"http://127.0.0.1:{port}/ping", proc.pid
    finally:
        _stop(proc)


@contextmanager
def fleet_server(db_url: str, work: Path, workers: int) -> Iterator[tuple[str, int, str]]:
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "TINYFLEET_DATABASE_URL": db_url,
        "TINYFLEET_DATA_DIR": str(work / "data"),
        "TINYFLEET_ROLLOUT_RUNNER_ENABLED": "false",
    }
    made = subprocess.run(
        [sys.executable, "-c", SERVER, "create-token", "--name", f"bench{workers}", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    token = json.loads(made.stdout)["token"]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-c", SERVER, "run", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(
        [*cmd, "--no-access-log", "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_up(f"{base}/healthz", proc)
        yield base, proc.pid, token
    finally:
        _stop(proc)


def seed(base: str, token: str) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        if client.get("/api/v1/devices", params={"limit": 1}).json()["total"] >= N_DEVICES:
            return
        for i in range(N_DEVICES):
            tags = {"site": f"s{i % 10}", "ring": "canary" if i % 20 == 0 else "main"}
            hw = ("cortex-m4f", "esp32-s3", "pi-zero-2w", "pi-4")[i % 4]
            body = {"id": f"dev-{i:04d}", "hardware_class": hw, "tags": tags}
            client.post("/api/v1/devices", json=body).raise_for_status()


def run_one(
    db_url: str, label: str, seconds: int, repeats: int, workers: int, work: Path
) -> dict[str, list[dict[str, float]]]:
    lua = work / "get.lua"
    lua.write_text(GET_LUA)
    results: dict[str, list[dict[str, float]]] = {}
    with (
        fleet_server(db_url, work / label, workers) as (base, pid, token),
        bare_server() as (bare_url, bare_pid),
    ):
        seed(base, token)
        routes = [
            ("GET /healthz", f"{base}/healthz", None, None),
            ("GET /api/v1/devices/{id}", base, token, lua),
            ("GET /api/v1/devices?limit=50", f"{base}/api/v1/devices?limit=50", token, None),
            ("GET /api/v1/devices?tag=site=s3", f"{base}/api/v1/devices?tag=site=s3&limit=50", token, None),
        ]
        for _ in range(repeats):
            results.setdefault(f"{label}, {workers} worker(s): baseline bare FastAPI sync route", []).append(
                wrk(bare_url, seconds, bare_pid, None)
            )
            for name, url, tok, script in routes:
                results.setdefault(f"{label}, {workers} worker(s): {name}", []).append(
                    wrk(url, seconds, pid, tok, script)
                )
    return results


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--workers", default="1,2", help="comma-separated uvicorn worker counts")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not installed (apt-get install wrk)")
        return 2
    started = dt.datetime.now(dt.UTC)
    rows: list[tuple[str, dict[str, float]]] = []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tf-bench-api-")))
        for workers in (int(w) for w in args.workers.split(",")):
            dbs: list[tuple[str, str]] = []
            if args.db in ("sqlite", "both"):
                dbs.append(("sqlite", f"sqlite:///{work / f'bench-{workers}.db'}"))
            if args.db in ("postgresql", "both"):
                if postgres_reachable():
                    dbs.append(("postgresql", stack.enter_context(postgres_schema_url(prefix="tf_bench"))))
                else:
                    print("PostgreSQL not reachable on 127.0.0.1:5432: skipped")
            for label, url in dbs:
                measured = run_one(url, label, args.seconds, args.repeats, workers, work)
                rows += [(name, _median(runs)) for name, runs in measured.items()]
    print(
        f"\n{started:%Y-%m-%d %H:%M} UTC: {CONNECTIONS} connections, {args.seconds} s per pass, median of "
        f"{args.repeats} interleaved passes, {N_DEVICES} devices, {os.cpu_count()} CPUs shared with "
        "everything else on the machine (load = 1-min load average during the passes)"
    )
    header = "| route | req/s | p50 ms | p90 ms | p99 ms | non-2xx | CPU ms/req | load | p50<20, p99<100 |"
    print(header + "\n|:--|--:|--:|--:|--:|--:|--:|--:|:--|")
    for name, f in rows:
        verdict = "" if "baseline" in name else ("met" if f["p50"] < 20 and f["p99"] < 100 else "missed")
        print(
            f"| {name} | {f['rps']:.0f} | {f['p50']:.1f} | {f['p90']:.1f} | {f['p99']:.1f} "
            f"| {f['errors']:.0f} | {f['cpu_ms']:.2f} | {f['load']:.1f} | {verdict} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
