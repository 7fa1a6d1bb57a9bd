"""Helpers of the releases tests (imported by name: this directory's conftest puts it on sys.path)."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import shutil
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select

from fleet_server.db import MlModel, ModelVersion
from fleet_server.settings import Settings

TESTS = Path(__file__).resolve().parents[2]
MODEL = "digits"
VERSIONS = {"1.0.1": "v1", "1.0.2": "v2", "1.0.3": "v3"}
PI = "pi-zero-2w"


def ota_support() -> Any:
    """The OTA client tests' support module, loaded under the name its own loader uses (shared cache)."""
    name = "tinyfleet_tests_ota_client_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS / "device_agent" / "_ota_client_support.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def register_version(app: FastAPI, settings: Settings, model: str, version: str, source: Path) -> None:
    with app.state.session_factory() as session:
        try:
            from fleet_server.catalog.service import register_converted_version
        except ImportError:
            register_converted_version = None
        if register_converted_version is not None:
            register_converted_version(session, settings, model, version, source)
            return
        assert settings.artifact_dir is not None
        relative = f"models/{model}/{version}"
        shutil.copytree(source, Path(settings.artifact_dir) / relative)
        row = session.scalar(select(MlModel).where(MlModel.name == model))
        if row is None:
            row = MlModel(name=model)
            session.add(row)
            session.flush()
        session.add(ModelVersion(model_id=row.id, version=version, artifact_dir=relative))
        session.commit()


def release_body(version: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "version": version,
        "variant": "float32",
        "hardware_classes": [PI],
    }
    body.update(changes)
    return body


def basic_header(device_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{device_id}:{secret}".encode()).decode()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CuttingProxy:
    """A real TCP proxy in front of the server that closes the first ``cuts`` responses after
    ``cut_after`` body-and-header bytes: a connection dropped mid-download. Logs request heads."""

    def __init__(self, upstream_port: int, *, cut_after: int, cuts: int = 1) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.request_heads: list[str] = []
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        with self._lock:
            limit = self.cut_after if self.cuts_left > 0 else None
            if limit is not None:
                self.cuts_left -= 1

        def client_to_upstream() -> None:
            first = True
            try:
                while data := client.recv(65536):
                    if first:
                        with self._lock:
                            self.request_heads.append(data.split(b"\r\n\r\n")[0].decode("latin-1"))
                        first = False
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=client_to_upstream, daemon=True).start()
        sent = 0
        try:
            while data := upstream.recv(65536):
                if limit is not None and sent + len(data) > limit:
                    client.sendall(data[: limit - sent])
                    break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._stop = True
        self._listener.close()
