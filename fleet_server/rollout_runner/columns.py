"""Fetch a query result column by column (the runner's inputs are numpy columns, not rows)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select


def fetch_columns(conn: Connection, stmt: Any, pg: bool) -> list[Any] | None:
    """The result column by column (None when empty). On PostgreSQL as one row of arrays (array_agg):
    fetching 100,000 rows as row objects and transposing them in Python cost more than the query."""
    if pg:
        sub = stmt.subquery()
        row = conn.execute(select(*[func.array_agg(c) for c in sub.c])).one()
        return None if row[0] is None else list(row)
    rows = conn.execute(stmt).all()
    return list(zip(*rows, strict=True)) if rows else None
