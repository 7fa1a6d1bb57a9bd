"""Engine and session factory; SQLite gets WAL, foreign keys and a busy timeout on every connection."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

# A request holds its session's connection from its first query (auth, on a worker thread) until the
# session is closed, across threadpool hops, so in-flight requests, not AnyIO's 40 threads, bound the
# connections in use. The pool keeps up to 40 open: with 10, 50 clients made the pool open (and close)
# an overflow connection for ~1 request in 5 (768 opens in ~3,800 requests; 82 with 40), each an
# open + 4 PRAGMAs on SQLite and a new server backend on PostgreSQL. 70 connections in all at most.
POOL_SIZE = 40
MAX_OVERFLOW = 30


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
