"""Catalog fixtures: one tiny Keras model + its data, made in a child process (no TF in this process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # catalog_support


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tiny.keras (8x8x1 -> 10 classes), calibration.npz (x), evaluation.npz (x, y)."""
    out = tmp_path_factory.mktemp("tiny-model")
    subprocess.run([sys.executable, str(HERE / "make_tiny_model.py"), str(out)], check=True, timeout=300)
    return {
        "model": out / "tiny.keras",
        "calibration": out / "calibration.npz",
        "evaluation": out / "evaluation.npz",
    }
