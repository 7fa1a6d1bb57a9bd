"""Shapes shared by every resource: pagination envelope, safe text, aware timestamps."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from fleet_server.settings import HARD_MAX_PAGE_SIZE

T = TypeVar("T")
MAX_OFFSET = 10_000_000  # deeper paging than this is a scan, not a page; also keeps SQL ints in range
MAX_INT_ID = 2**63 - 1

# No control characters (PostgreSQL rejects NUL in text; logs and terminals choke on the rest).
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]*$"


def SafeText(max_length: int, min_length: int = 0) -> type[str]:
    return Annotated[  # type: ignore[return-value]
        str, StringConstraints(min_length=min_length, max_length=max_length, pattern=PRINTABLE_PATTERN)
    ]


def _to_utc(value: dt.datetime) -> dt.datetime:
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("timestamp out of range") from None


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


class StrictModel(BaseModel):
    """Request bodies and query models: unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class PageQuery(StrictModel):
    limit: int | None = Field(
        default=None,
        ge=1,
        le=HARD_MAX_PAGE_SIZE,
        description="Page size (default and maximum from settings).",
    )
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="Items matching the filters, over all pages.")
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page, null on the last page.")

    @classmethod
    def build(cls, items: list[T], *, total: int, limit: int, offset: int) -> Page[T]:
        nxt = offset + len(items)
        return cls(
            items=items, total=total, limit=limit, offset=offset, next_offset=nxt if nxt < total else None
        )
