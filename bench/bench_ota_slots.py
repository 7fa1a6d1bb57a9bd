"""Slot store throughput: what crash safety costs over a plain write, and what boot() costs.

Run: ``.venv/bin/python bench/bench_ota_slots.py [--sizes-mib 0.375 4 32] [--json]``

Baselines measured in the same run, on the same disk:
* install: the artifact written to a file with one fsync at the end (the least any installer does;
  "xN" in the table = N times that) vs. SlotStore (chunked resumable write, fsync + atomic state
  write every checkpoint, verify, metadata, atomic switch) and vs. the full Installer (plus
  Ed25519 manifest verification).
* boot: sha256 of the slot file vs. SlotStore.boot() (state read, trial accounting, slot hash check).
* delta: Installer with a bsdiff patch vs. with the full artifact, same release.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ota import keys
from ota.delta import DeltaPolicy
from ota.installer import Installer, bytes_source
from ota.release import PreviousArtifact, ReleaseSigner, build_release
from ota.slots import SlotStore
from ota.trust import DeviceTrust

MIB = 1024 * 1024
CAPACITY = 256 * MIB
CHUNK = 64 * 1024


def _best(fn, repeat: int) -> float:
    """Best of ``repeat`` wall times (least disturbed by the other jobs on a shared machine)."""
    times = []
    for _ in range(repeat):
        times.append(fn())
    return min(times)


def plain_write(root: Path, data: bytes) -> float:
    path = root / "plain.bin"
    start = time.perf_counter()
    with path.open("wb") as f:
        for i in range(0, len(data), CHUNK):
            f.write(data[i : i + CHUNK])
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return elapsed


def fresh_store(root: Path, v1: bytes, checkpoint: int) -> SlotStore:
    shutil.rmtree(root, ignore_errors=True)
    store = SlotStore(root, capacity=CAPACITY, checkpoint_bytes=checkpoint)
    store.provision(v1, counter=1)
    return store


def store_install(root: Path, v1: bytes, v2: bytes, checkpoint: int) -> float:
    store = fresh_store(root, v1, checkpoint)
    digest = hashlib.sha256(v2).hexdigest()
    start = time.perf_counter()
    store.begin_update(kind="full", manifest=b"{}", sha256=digest, length=len(v2), counter=2)
    with store.open_slot_writer() as writer:
        for chunk in bytes_source(v2, CHUNK)(0):
            writer.write(chunk)
        sha, length = writer.finish()
    store.mark_verified(sha256=sha, length=length)
    store.switch()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mib", type=float, nargs="+", default=[0.375, 4.0, 32.0])
    ap.add_argument("--delta-mib", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="machine output")
    args = ap.parse_args()
    console = Console(stderr=args.json, width=130)
    rows: list[dict] = []
    root_key = keys.generate_private_key()
    signer = ReleaseSigner.certified_by(root_key)
    device = DeviceTrust([keys.raw_public_key(root_key)], "pi-4", installed_counter=1)
    with (
        tempfile.TemporaryDirectory(prefix="bench-ota-", dir=os.environ.get("BENCH_DIR")) as tmp,
        Progress(console=console, transient=True) as progress,
    ):
        base = Path(tmp)
        task = progress.add_task("benchmarking", total=len(args.sizes_mib) + 1)
        for size_mib in args.sizes_mib:
            size = int(size_mib * MIB)
            v1, v2 = os.urandom(size), os.urandom(size)
            plain = _best(lambda d=v2: plain_write(base, d), args.repeat)
            rel = build_release(
                v2,
                model="bench",
                version="1.0.2",
                counter=2,
                hardware_classes=["pi-4"],
                variant="float32",
                signer=signer,
            )

            def installer_run(v1: bytes = v1, v2: bytes = v2, manifest: bytes = rel.manifest_bytes) -> float:
                store = fresh_store(base / "store", v1, 64 * 1024)
                start = time.perf_counter()
                Installer(store, device).install(manifest, artifact=bytes_source(v2, CHUNK))
                return time.perf_counter() - start

            row = {
                "size_bytes": size,
                "plain_write_fsync_s": plain,
                "store_install_default_s": _best(
                    lambda v1=v1, v2=v2: store_install(base / "s", v1, v2, 64 * 1024), args.repeat
                ),
                "store_install_ckpt1m_s": _best(
                    lambda v1=v1, v2=v2: store_install(base / "s", v1, v2, MIB), args.repeat
                ),
                "installer_install_s": _best(installer_run, args.repeat),
            }
            store = fresh_store(base / "boot", v2, 64 * 1024)
            slot = store.slot_path("a")

            def hash_only(slot: Path = slot) -> float:
                start = time.perf_counter()
                hashlib.sha256(slot.read_bytes()).hexdigest()
                return time.perf_counter() - start

            def boot(root: Path = base / "boot") -> float:
                start = time.perf_counter()
                SlotStore(root, capacity=CAPACITY).boot()
                return time.perf_counter() - start

            row["sha256_only_s"] = _best(hash_only, args.repeat)
            row["boot_s"] = _best(boot, args.repeat)
            rows.append(row)
            progress.advance(task)

        # Delta vs full for a "fine-tuned" model: 2 % of the bytes changed in place.
        size = int(args.delta_mib * MIB)
        v1 = os.urandom(size)
        v2 = bytearray(v1)
        for i in range(0, size, 50):
            v2[i] ^= 0x5A
        v2 = bytes(v2)
        rel = build_release(
            v2,
            model="bench",
            version="1.0.2",
            counter=2,
            hardware_classes=["pi-4"],
            variant="float32",
            signer=signer,
            delta_policy=DeltaPolicy(max_fraction=1.0),
            previous=[PreviousArtifact("1.0.1", 1, v1)],
        )
        patch = next(iter(rel.patches.values()))

        def run(kind: str) -> float:
            store = fresh_store(base / "delta", v1, 64 * 1024)
            start = time.perf_counter()
            source = (
                {"patch": bytes_source(patch, CHUNK)} if kind == "delta" else {"artifact": bytes_source(v2)}
            )
            Installer(store, device).install(rel.manifest_bytes, **source)
            return time.perf_counter() - start

        delta_row = {
            "size_bytes": size,
            "patch_bytes": len(patch),
            "full_install_s": _best(lambda: run("full"), args.repeat),
            "delta_install_s": _best(lambda: run("delta"), args.repeat),
        }
        progress.advance(task)

    if args.json:
        print(json.dumps({"install_and_boot": rows, "delta": delta_row}, indent=1))
        return 0
    table = Table(title=f"slot store vs baselines (best of {args.repeat}; disk: {tempfile.gettempdir()})")
    for col in (
        "size",
        "plain write+fsync",
        "store (default ckpt)",
        "store (ckpt>=1M)",
        "Installer (+verify)",
        "sha256 only",
        "boot()",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        mib = r["size_bytes"] / MIB

        def cell(key: str, base_key: str, r: dict = r, mib: float = mib) -> str:
            t = r[key]
            return f"{t * 1000:.0f} ms x{t / r[base_key]:.0f}"

        table.add_row(
            f"{mib:g} MiB",
            f"{r['plain_write_fsync_s'] * 1000:.1f} ms",
            cell("store_install_default_s", "plain_write_fsync_s"),
            cell("store_install_ckpt1m_s", "plain_write_fsync_s"),
            cell("installer_install_s", "plain_write_fsync_s"),
            f"{r['sha256_only_s'] * 1000:.1f} ms",
            f"{r['boot_s'] * 1000:.1f} ms x{r['boot_s'] / r['sha256_only_s']:.1f}",
        )
    console.print(table)
    d = delta_row
    console.print(
        f"delta install of a {d['size_bytes'] / MIB:g} MiB artifact: patch {d['patch_bytes']} bytes, "
        f"{d['delta_install_s'] * 1000:.0f} ms vs full {d['full_install_s'] * 1000:.0f} ms (local source: "
        "the delta's gain is in bytes transferred, not in local time)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
