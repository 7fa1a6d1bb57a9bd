"""Child process of test_device_faults: one OTA update with the file-size limit below the artifact size.

RLIMIT_FSIZE makes every write past ``--fsize`` bytes fail with EFBIG -- the kernel's refusal, through
the same OSError path as ENOSPC on a full disk. Prints the client's final record as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--support", type=Path, required=True)
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--flash", type=Path, required=True)
    ap.add_argument("--root-key", type=Path, required=True)
    ap.add_argument("--command", type=Path, required=True)
    ap.add_argument("--fsize", type=int, required=True)
    args = ap.parse_args()
    sys.path.insert(0, str(args.support))
    from ota_support_loader import ota_client_support

    from ota import keys
    from telemetry.schemas import UpdateAvailable

    s = ota_client_support()
    kit = s.Kit(args.models, keys.load_private_key(args.root_key), None)
    client = s.make_client(args.flash, kit)
    client.resume()
    cmd = UpdateAvailable.model_validate_json(args.command.read_text())
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (args.fsize, args.fsize))
    record = client.handle_update(cmd)
    print(json.dumps({"state": record.state, "error_code": record.error_code, "reason": record.reason}))


if __name__ == "__main__":
    main()
