"""Operator API latency under 50 concurrent clients (wrk), on SQLite and PostgreSQL.

Starts `tinyfleet server run` (one uvicorn process) on a fresh database with 1,000 provisioned devices,
then drives it with `wrk -c50` (apt-get install wrk) for each route. Baseline in the same run: /healthz
(no auth, one `SELECT 1`) -- the floor of this server, framework and database on this machine.
Targets from issue 5: list/get p50 < 20 ms and p99 < 100 ms.

Usage: .venv/bin/python bench/bench_server_api.py [--seconds 8] [--db sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
from postgres import postgres_reachable, postgres_schema_url  # noqa: E402

N_DEVICES = 1000
CONNECTIONS = 50
SERVER = "from fleet_server.cli.server_commands import server_app; server_app()"
GET_LUA = """
math.randomseed(42)
request = function()
  return wrk.format("GET", string.format("/api/v1/devices/dev-%04d", math.random(0, LAST)))
end
""".replace("LAST", str(N_DEVICES - 1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(url: str, seconds: int, token: str | None, lua: Path | None = None) -> dict[str, float]:
    cmd = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    if lua:
        cmd += ["-s", str(lua)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", out, re.M))
    if set(pct) != {"50", "90", "99"}:
        raise RuntimeError(f"wrk gave no latency figures for {url}:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _ms(pct["50"]),
        "p90": _ms(pct["90"]),
        "p99": _ms(pct["99"]),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def run_one(db_url: str, label: str, seconds: int, work: Path) -> list[tuple[str, dict[str, float]]]:
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TINYFLEET_DATABASE_URL": db_url, "TINYFLEET_DATA_DIR": str(work / "data")}
    made = subprocess.run(
        [sys.executable, "-c", SERVER, "create-token", "--name", "bench", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    token = json.loads(made.stdout)["token"]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, "run", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=auth, timeout=10) as client:
            for i in range(N_DEVICES):
                tags = {"site": f"s{i % 10}", "ring": "canary" if i % 20 == 0 else "main"}
                hw = ("cortex-m4f", "esp32-s3", "pi-zero-2w", "pi-4")[i % 4]
                r = client.post(
                    "/api/v1/devices", json={"id": f"dev-{i:04d}", "hardware_class": hw, "tags": tags}
                )
                r.raise_for_status()
        lua = work / "get.lua"
        lua.write_text(GET_LUA)
        results = [
            ("baseline GET /healthz", wrk(f"{base}/healthz", seconds, None)),
            ("GET /api/v1/devices/{id}", wrk(base, seconds, token, lua)),
            ("GET /api/v1/devices?limit=50", wrk(f"{base}/api/v1/devices?limit=50", seconds, token)),
            (
                "GET /api/v1/devices?tag=site=s3",
                wrk(f"{base}/api/v1/devices?tag=site=s3&limit=50", seconds, token),
            ),
        ]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return [(f"{label}: {name}", figures) for name, figures in results]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not installed (apt-get install wrk)")
        return 2
    rows: list[tuple[str, dict[str, float]]] = []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tf-bench-api-")))
        if args.db in ("sqlite", "both"):
            rows += run_one(f"sqlite:///{work / 'bench.db'}", "sqlite", args.seconds, work / "sqlite")
        if args.db in ("postgresql", "both"):
            if postgres_reachable():
                url = stack.enter_context(postgres_schema_url(prefix="tf_bench"))
                rows += run_one(url, "postgresql", args.seconds, work / "pg")
            else:
                print("PostgreSQL not reachable on 127.0.0.1:5432: skipped")
    print(
        f"\n{CONNECTIONS} concurrent connections, {args.seconds} s per route, {N_DEVICES} devices, "
        f"one uvicorn process, {os.cpu_count()} CPUs shared with everything else on the machine"
    )
    print(
        f"{'route':44} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'non-2xx':>7}  p50<20 p99<100"
    )
    for name, f in rows:
        verdict = "" if "baseline" in name else ("met" if f["p50"] < 20 and f["p99"] < 100 else "MISSED")
        figures = f"{f['rps']:7.0f} {f['p50']:7.1f} {f['p90']:7.1f} {f['p99']:7.1f} {f['errors']:7.0f}"
        print(f"{name:44} {figures}  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
