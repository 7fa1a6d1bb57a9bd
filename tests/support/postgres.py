"""A private PostgreSQL schema per test on 127.0.0.1:5432 (trust auth, database ``test``), dropped after.

Usage from a conftest (put ``tests/support`` on ``sys.path`` first)::

    from postgres import postgres_schema_url, postgres_reachable

    with postgres_schema_url() as url:   # postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D...
        ...

Every connection made with that URL has ``search_path`` set to the private schema, so tables, the
``alembic_version`` table and sequences all land there; ``DROP SCHEMA ... CASCADE`` removes them all.
Override host/port/user/database with ``TINYFLEET_TEST_PG_{HOST,PORT,USER,DB}``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

PG_HOST = os.environ.get("TINYFLEET_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TINYFLEET_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TINYFLEET_TEST_PG_USER", "postgres")
PG_DB = os.environ.get("TINYFLEET_TEST_PG_DB", "test")


def postgres_reachable(timeout: float = 0.5) -> bool:
    """True when something answers on the PostgreSQL port (the only reason to skip PG tests)."""
    with contextlib.suppress(OSError), socket.create_connection((PG_HOST, PG_PORT), timeout=timeout):
        return True
    return False


def _admin_conninfo() -> str:
    return f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={PG_DB}"


@contextlib.contextmanager
def postgres_schema_url(prefix: str = "tf_test") -> Iterator[str]:
    """Create a uniquely named schema, yield a SQLAlchemy URL bound to it, drop it afterwards."""
    schema = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    url = URL.create(
        "postgresql+psycopg",
        username=PG_USER,
        host=PG_HOST,
        port=PG_PORT,
        database=PG_DB,
        query={"options": f"-csearch_path={schema}"},
    )
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def leftover_schemas(prefix: str = "tf_test") -> list[str]:
    """Schemas with ``prefix`` still present (a test can assert its own was dropped)."""
    with psycopg.connect(_admin_conninfo()) as conn:
        names = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()]
    return sorted(n for n in names if n.startswith(prefix + "_"))
