"""Ingest fixtures: a migrated DB on each backend (parent conftest) and a private Mosquitto."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # ingest_support
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))

from mosquitto_broker import MosquittoBroker, mosquitto_available  # noqa: E402

from fleet_server.db import make_engine  # noqa: E402


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed")
    with MosquittoBroker(tmp_path / "broker", persistence=False) as b:
        yield b
