"""One power-on of a device running the OTA client, for tests/device_agent/test_ota_client_power_loss.py.

    python _ota_client_child.py --flash DIR --job job.json [--crash-at N | --count]

Builds the real client (HttpFetcher against the parent's HTTP server, SlotStore on ``--flash``, the golden
health check on LiteRT), calls ``resume()`` (boot + continue the persisted state), then hands it the
update command of ``job.json`` -- as the server re-sends a command until the device reports on it; the
client ignores a command it already finished. Prints ``RESULT {"state": ..., "error_code": ...}``.

``--crash-at N`` SIGKILLs this process at the N-th crash point (every fsync, rename and chunk write of
the slot store and of the client's state file, see ota.crashpoints), printing ``CRASH label`` first.
``--count`` prints ``POINTS n``: how many crash points a clean run passed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from device_agent.http_download import HttpFetcher, RetryPolicy
from device_agent.ota_client import GoldenHealthCheck, OtaClient
from firmware_stubs.hardware_profiles import get_profile
from ota import crashpoints
from ota.slots import SlotStore
from ota.trust import DeviceTrust
from telemetry.schemas import UpdateAvailable

points = 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flash", type=Path, required=True)
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--crash-at", type=int)
    parser.add_argument("--count", action="store_true")
    args = parser.parse_args()
    job = json.loads(args.job.read_text())

    def hook(label: str) -> None:
        global points
        points += 1
        if args.crash_at is not None and points >= args.crash_at:
            os.write(1, f"CRASH {label}\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)

    crashpoints.set_hook(hook)
    profile = get_profile(job["hardware_class"])
    companions = {sha: Path(d) for sha, d in job["companions"].items()}
    client = OtaClient(
        args.flash,
        SlotStore(args.flash, capacity=profile.model_flash_budget_bytes, checkpoint_bytes=4096),
        DeviceTrust(
            root_public_keys=[bytes.fromhex(job["root_public_key"])],
            hardware_class=job["hardware_class"],
            installed_counter=0,
        ),
        HttpFetcher(
            token=job["token"], retry=RetryPolicy(attempts=3, backoff_s=0.05, timeout_s=5.0), chunk_size=4096
        ),
        GoldenHealthCheck(profile, lambda m: companions.get(m.artifact_sha256)),
        device_id=job["device_id"],
    )
    client.resume()
    record = client.handle_update(UpdateAvailable.model_validate(job["command"], strict=False))
    if args.count:
        print(f"POINTS {points}")
    print("RESULT " + json.dumps({"state": record.state, "error_code": record.error_code}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
