"""Run every benchmark script in bench/ in turn (each prints its figures next to its own baseline).

Usage: .venv/bin/python bench/run_all.py [name-substring ...]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    me = Path(__file__).name
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != me and not p.name.startswith("_"))
    if argv:
        scripts = [p for p in scripts if any(a in p.name for a in argv)]
    failed: list[str] = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"=== {script.name}: exit {rc} after {time.perf_counter() - start:.1f} s ===", flush=True)
        if rc:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
