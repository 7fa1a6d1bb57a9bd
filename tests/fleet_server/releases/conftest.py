"""Fixtures of the releases tests: real converted models, keys, registered versions, a served API.

Models: the OTA client tests' digits classifiers (tests/device_agent/_ota_client_support.py: v1, v2 =
v1 with a fine-tuned head, v3), converted once per session by the real converter pipeline. They are
registered as model versions of "digits" (1.0.1, 1.0.2, 1.0.3) through the catalog's
``register_converted_version`` when it is available, else as plain rows over a copied directory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from fleet_server.db import Release
from fleet_server.releases.keystore import Keystore
from fleet_server.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))  # release_test_support

from release_test_support import MODEL, VERSIONS, free_port, ota_support, register_version


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with v1, v2, v3 converter outputs (float32 only, checked for pi-zero-2w)."""
    return ota_support().session_models(tmp_path_factory)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def oversized(converted: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1's converter output plus a 500 KiB "full_int8" artifact (its report entry consistent): larger
    than a cortex-m4f model slot (384 KiB), small enough for an esp32-s3 (2 MiB)."""
    out = tmp_path_factory.mktemp("oversized") / "big"
    shutil.copytree(converted / "v1", out)
    data = (out / "float32.tflite").read_bytes()
    data += bytes(500 * 1024 - len(data))
    (out / "full_int8.tflite").write_bytes(data)
    report = json.loads((out / "report.json").read_text())
    entry = dict(report["variants"]["float32"])
    sha = hashlib.sha256(data).hexdigest()
    entry.update(variant="full_int8", file="full_int8.tflite", bytes=len(data), sha256=sha)
    report["variants"]["full_int8"] = entry
    report["artifacts"]["full_int8.tflite"] = {"bytes": len(data), "sha256": sha}
    (out / "report.json").write_text(json.dumps(report))
    return out


@pytest.fixture
def keystore(settings: Settings) -> Keystore:
    store = Keystore(settings)
    store.generate()
    return store


@pytest.fixture
def digits(app: FastAPI, settings: Settings, converted: Path) -> dict[str, Path]:
    """digits 1.0.1 / 1.0.2 / 1.0.3 registered; returns version -> converter directory."""
    for version, directory in VERSIONS.items():
        register_version(app, settings, MODEL, version, converted / directory)
    return {version: converted / directory for version, directory in VERSIONS.items()}


@pytest.fixture
def store_state(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    """Release rows (with deltas) and every file under <artifact_dir>/releases: compared around refusals."""

    def _state() -> dict[str, Any]:
        with app.state.session_factory() as s:
            rows = [
                (r.id, r.state, r.counter, r.key_id, sorted(d.base_sha256 for d in r.deltas))
                for r in s.scalars(select(Release).order_by(Release.id))
            ]
        assert settings.artifact_dir is not None
        root = Path(settings.artifact_dir) / "releases"
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
        return {"rows": rows, "files": files}

    return _state


# ------------------------------------------------------------------------------- a served API (uvicorn)


@pytest.fixture
def served(app: FastAPI) -> Iterator[str]:
    """The app served by a real uvicorn on a free loopback port; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
