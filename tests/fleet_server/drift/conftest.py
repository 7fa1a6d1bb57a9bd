"""Make drift_support importable in importlib mode (the fleet_server conftest provides the DB fixtures)."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from fleet_server.db import make_engine, make_session_factory  # noqa: E402
from fleet_server.settings import Settings  # noqa: E402


@pytest.fixture
def session_factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test's migrated database (SQLite or PostgreSQL, see tests/fleet_server/conftest)."""
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()
