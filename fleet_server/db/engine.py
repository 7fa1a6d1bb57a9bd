"""Engine and session factory; SQLite gets WAL, foreign keys and a busy timeout on every connection."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

# Sync routes run on AnyIO's threadpool (40 threads): every one of them must be able to hold a
# connection (plus the audit writer's) without waiting for another request to finish.
POOL_SIZE = 10
MAX_OVERFLOW = 60


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers run while the ingest worker writes; FKs are off by default in SQLite.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create the engine for ``url`` (``sqlite:///file`` or ``postgresql+psycopg://...``)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False},
            pool_size=POOL_SIZE,
            max_overflow=MAX_OVERFLOW,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql") and not url.startswith("postgresql+psycopg"):
        raise ValueError("PostgreSQL URLs must use the psycopg 3 driver: postgresql+psycopg://...")
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: response models are built from objects after the commit.
    return sessionmaker(bind=engine, expire_on_commit=False)
