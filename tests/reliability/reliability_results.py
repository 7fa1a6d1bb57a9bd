"""Where the fault tests' figures go: one ``RELIABILITY {json}`` line on stdout (``pytest -s``), and
appended to $TINYFLEET_RELIABILITY_RESULTS when set (bench/reliability_long.py collects them there)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from device_fleet import FaultCounts


def record(counts: FaultCounts, test_id: str, **extra: Any) -> FaultCounts:
    counts.extra.update(extra)
    row = {"test": test_id, **asdict(counts)}
    print("\nRELIABILITY " + json.dumps(row, sort_keys=True, default=str))
    target = os.environ.get("TINYFLEET_RELIABILITY_RESULTS")
    if target:
        with Path(target).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, sort_keys=True, default=str) + "\n")
    return counts
