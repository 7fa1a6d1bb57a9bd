"""Operator CLI tests run against a real server: the session-wide ``live_server`` fixture.

``live_server`` (tests/fleet_server/live_server.py): one `tinyfleet server run` process on a free port
with a SQLite database, shared by every CLI test of the run; ``.base_url``, ``.tokens`` (admin,
operator, viewer), ``.bearer(role)`` and ``.cli_env(role)``. Tests that share it must use their own
object names (e.g. device ids prefixed by the test) since the database is shared too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live_server import LiveServer, live_server_process


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server_process(tmp_path_factory.mktemp("live-server")) as server:
        yield server
