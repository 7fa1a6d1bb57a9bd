"""Reliability / security suite: real Mosquitto, real PostgreSQL, real child processes.

The fleet-server fixtures (``db_url`` on SQLite and PostgreSQL, ``app``, ``client``, ``tokens``,
``snapshot``, ``audit_rows``, ...) are the ones of tests/fleet_server/conftest.py, loaded by path and
re-exported here, so both suites build their databases the same way.

Every fault test prints one line ``RELIABILITY {json}`` (fault, sent, stored, lost, duplicates, bricked,
refused); run with ``-s`` to collect them, or set TINYFLEET_RELIABILITY_RESULTS=<file> to have them
appended there (bench/reliability_long.py does, to fill RELIABILITY.md).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parents[1]
for _p in (_TESTS / "support", Path(__file__).parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


def _load(name: str, path: Path):  # type: ignore[no-untyped-def]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_fs = _load("tinyfleet_reliability_fleet_conftest", _TESTS / "fleet_server" / "conftest.py")

empty_db_url = _fs.empty_db_url
_sqlite_template = _fs._sqlite_template
_postgres_run_schema = _fs._postgres_run_schema
db_url = _fs.db_url
settings = _fs.settings
app = _fs.app
client = _fs.client
tokens = _fs.tokens
as_role = _fs.as_role
provision = _fs.provision
snapshot = _fs.snapshot
audit_rows = _fs.audit_rows

from mosquitto_broker import MosquittoBroker, mosquitto_available  # noqa: E402
from sqlalchemy import Engine  # noqa: E402

from fleet_server.db import make_engine  # noqa: E402


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private Mosquitto with on-disk persistence: sessions and queued QoS 1 survive its restart."""
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed")
    with MosquittoBroker(tmp_path / "broker", persistence=True) as b:
        yield b


@pytest.fixture
def pg_only(db_url: str) -> str:
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL-only fault (connections killed on the server side)")
    return db_url
