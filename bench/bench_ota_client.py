"""OTA client benchmark: what the persisted state machine and resumable download cost over a bare GET.

On a local real HTTP server (tests/support/http_range_server.py), for a signed 4 MiB artifact:

* baseline: one bare ``urllib`` GET of the artifact into memory (no disk, no hashing);
* ``HttpFetcher`` alone streaming the same bytes (Range request, 16 KiB reads);
* the whole client update: manifest fetch + verify, resumable write with checkpoints to a slot, sha256,
  atomic switch, trial, commit, and a state-file write (temp + fsync + rename + dir fsync) per
  transition. The trial health check is a pass-through here (the artifact is random bytes), so this
  isolates the client's own overhead;
* the disk floor: the same bytes written to a file and fsynced once;
* the same update with the connection dropped after every 512 KiB: wire bytes / artifact bytes;
* the cost of one persisted transition (``save_record``).

Run:  .venv/bin/python bench/bench_ota_client.py [--size-mib 4] [--repeat 5] [--json]
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from device_agent.http_download import HttpFetcher, RetryPolicy
from device_agent.ota_client import HealthVerdict, OtaClient
from device_agent.ota_state import OtaRecord, save_record
from ota import keys
from ota.release import ReleaseSigner, build_release
from ota.slots import SlotStore
from ota.trust import DeviceTrust
from telemetry.schemas import ArtifactRef, UpdateAvailable

ROOT = Path(__file__).resolve().parent.parent
HW = "pi-zero-2w"


def _server_module():
    spec = importlib.util.spec_from_file_location(
        "bench_range_server", ROOT / "tests/support/http_range_server.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_range_server"] = module
    spec.loader.exec_module(module)
    return module


def _median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(size_mib: int = 4, repeat: int = 5, as_json: bool = typer.Option(False, "--json")) -> None:
    rs = _server_module()
    console = Console(stderr=as_json)
    v1, v2 = os.urandom(64 * 1024), os.urandom(size_mib * 1024 * 1024)
    root = keys.generate_private_key()
    signer = ReleaseSigner.certified_by(root)
    release = build_release(
        v2,
        model="bench",
        version="1.0.2",
        counter=2,
        hardware_classes=[HW],
        variant="float32",
        signer=signer,
        created=datetime.now(UTC),
    )
    device = DeviceTrust(root_public_keys=[keys.raw_public_key(root)], hardware_class=HW, installed_counter=1)
    figures: dict[str, float] = {}
    with rs.RangeServer() as server, tempfile.TemporaryDirectory() as tmp:
        server.put("/m.json", release.manifest_bytes)
        url = server.put("/a.bin", v2)
        cmd = dict(
            device_id="bench-1",
            ts=0,
            release_id="bench-2",
            model_name="bench",
            target_version=2,
            hardware_class=HW,
            manifest=ArtifactRef(
                url=server.url("/m.json"),
                sha256=hashlib.sha256(release.manifest_bytes).hexdigest(),
                size_bytes=len(release.manifest_bytes),
            ),
            artifact=ArtifactRef(url=url, sha256=hashlib.sha256(v2).hexdigest(), size_bytes=len(v2)),
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def bare() -> None:
            with opener.open(url) as r:
                assert len(r.read()) == len(v2)

        def fetcher_only() -> None:
            f = HttpFetcher(chunk_size=16 * 1024)
            assert sum(len(b) for b in f.source(url)(0)) == len(v2)

        def write_once() -> None:  # the disk floor: the same bytes written and fsynced once
            path = Path(tmp) / "plain.bin"
            with path.open("wb") as f:
                f.write(v2)
                f.flush()
                os.fsync(f.fileno())

        runs = iter(range(10_000))
        wire: list[int] = []

        def client_update(drop: bool = False) -> None:
            flash = Path(tmp) / f"flash-{next(runs)}"
            store = SlotStore(flash, capacity=64 * 1024 * 1024)
            store.provision(v1, counter=1)
            fetcher = HttpFetcher(chunk_size=16 * 1024, retry=RetryPolicy(attempts=3, backoff_s=0.0))
            if drop:
                server.set_fault("/a.bin", rs.Fault(drop_after=512 * 1024))
            client = OtaClient(
                flash, store, device, fetcher, lambda p, m: HealthVerdict(True), device_id="bench-1"
            )
            client.resume()
            state = client.handle_update(UpdateAvailable(cmd_id=f"c{next(runs)}", **cmd)).state
            server.set_fault("/a.bin", None)
            assert state == "committed", client.record
            wire.append(fetcher.bytes_received)

        figures["bare_get_s"] = _median_s(bare, repeat)
        figures["fetcher_s"] = _median_s(fetcher_only, repeat)
        figures["write_fsync_s"] = _median_s(write_once, repeat)
        figures["client_update_s"] = _median_s(client_update, repeat)
        wire.clear()
        figures["client_update_dropping_s"] = _median_s(lambda: client_update(drop=True), max(1, repeat // 2))
        figures["dropping_wire_ratio"] = statistics.median(wire) / (len(v2) + len(release.manifest_bytes))
        rec = OtaRecord(state="downloading", cmd_id="x", manifest_b64="A" * 4000)
        figures["save_record_ms"] = 1000 * _median_s(lambda: save_record(Path(tmp), rec), repeat * 10)
    mib = len(v2) / 2**20
    figures["size_mib"] = mib
    if as_json:
        print(json.dumps(figures, indent=1))
        return
    table = Table(title=f"OTA client, {mib:.0f} MiB artifact over local HTTP (median of {repeat})")
    table.add_column("what")
    table.add_column("time", justify="right")
    table.add_column("MiB/s", justify="right")
    table.add_column("vs bare GET", justify="right")
    for key, label in [
        ("bare_get_s", "bare urllib GET (baseline)"),
        ("fetcher_s", "HttpFetcher stream"),
        ("write_fsync_s", "disk floor: write + one fsync"),
        ("client_update_s", "client: download→verify→switch→commit"),
        ("client_update_dropping_s", "client, connection dropped every 512 KiB"),
    ]:
        t = figures[key]
        table.add_row(label, f"{t * 1000:.0f} ms", f"{mib / t:.1f}", f"{t / figures['bare_get_s']:.2f}×")
    console.print(table)
    console.print(
        f"wire bytes / artifact with drops: {figures['dropping_wire_ratio']:.3f}   "
        f"one persisted transition (atomic write + fsync): {figures['save_record_ms']:.2f} ms"
    )


if __name__ == "__main__":
    typer.run(main)
