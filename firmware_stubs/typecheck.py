"""One value checker for the pydantic-free validated records of the device path.

The device agent cannot afford pydantic (~15 MB), so four kinds of records check their own fields:
the simulator's settings (firmware_stubs.checked), the agent's config sections (device_agent.sections),
the converter report as the device reads it (device_agent.report_reader) and the slot store's state
records (ota.slot_state). They differ in their error type, how a location is spelled and how a nested
record is built; the rules for a value against its annotation are the same and live here:
``Any``; ``X | None``; ``Literal``; ``tuple[X, ...]`` and fixed ``tuple[X, Y]``; ``list[X]``;
``dict[K, V]``; ``StrEnum`` members from their values; ``bool`` (never from ints); ``int`` (never from
bools); ``float`` (ints accepted, bools refused, finite unless allowed); ``str``; ``Path``.
"""

from __future__ import annotations

import enum
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin


def brief(v: Any) -> str:
    """A value for an error message, cut to 60 characters."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Rules:
    """How one record family reports and nests. ``nested`` returns NotImplemented for non-record types."""

    fail: Callable[[Any, str], Exception]  # (loc, message) -> the family's error
    join: Callable[[Any, str | int], Any]  # (loc, dict key or sequence index) -> the item's loc
    nested: Callable[[Any, Any, Any], Any]  # (annotation, value, loc) -> record | NotImplemented
    allow_inf_nan: bool = False


def check_value(tp: Any, v: Any, loc: Any, rules: Rules) -> Any:
    """``v`` checked (and where the rules say, converted) against the annotation ``tp``."""
    if tp is Any:
        return v
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        if v is None and len(args) < len(get_args(tp)):
            return None
        return check_value(args[0], v, loc, rules)
    if origin is Literal:
        if isinstance(v, bool) or v not in get_args(tp):
            raise rules.fail(loc, f"must be one of {get_args(tp)}, got {brief(v)}")
        return v
    if origin in (tuple, list):
        if not isinstance(v, (list, tuple)) or (origin is list and not isinstance(v, list)):
            raise rules.fail(loc, f"must be a list, got {type(v).__name__}")
        args = get_args(tp)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            items = [check_value(args[0], x, rules.join(loc, i), rules) for i, x in enumerate(v)]
        else:
            if len(v) != len(args):
                raise rules.fail(loc, f"must have {len(args)} items, got {brief(v)}")
            items = [
                check_value(a, x, rules.join(loc, i), rules)
                for i, (a, x) in enumerate(zip(args, v, strict=True))
            ]
        return items if origin is list else tuple(items)
    if origin is dict:
        kt, vt = get_args(tp)
        if not isinstance(v, dict):
            raise rules.fail(loc, f"must be an object, got {type(v).__name__}")
        return {
            check_value(kt, k, rules.join(loc, str(k)), rules): check_value(
                vt, x, rules.join(loc, str(k)), rules
            )
            for k, x in v.items()
        }
    built = rules.nested(tp, v, loc)
    if built is not NotImplemented:
        return built
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(v)
        except ValueError:
            raise rules.fail(loc, f"must be one of {[m.value for m in tp]}, got {brief(v)}") from None
    if tp is bool:
        if not isinstance(v, bool):
            raise rules.fail(loc, f"must be true or false, got {brief(v)}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise rules.fail(loc, f"must be an integer, got {brief(v)}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise rules.fail(loc, f"must be a number, got {brief(v)}")
        if not rules.allow_inf_nan and not math.isfinite(v):
            raise rules.fail(loc, f"must be finite, got {brief(v)}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise rules.fail(loc, f"must be a string, got {type(v).__name__}")
        return v
    if tp is Path:
        if not isinstance(v, (str, os.PathLike)):
            raise rules.fail(loc, f"must be a path, got {brief(v)}")
        return Path(v)
    raise TypeError(f"{loc}: unsupported field type {tp!r}")  # a programming error


def check_bounds(
    meta: typing.Mapping[str, Any], v: Any, loc: Any, fail: Callable[[Any, str], Exception]
) -> None:
    """Numeric bounds declared in a dataclass field's metadata (gt / ge / lt / le)."""
    for key, words, ok in (
        ("gt", "greater than", lambda b: v > b),
        ("ge", "at least", lambda b: v >= b),
        ("lt", "less than", lambda b: v < b),
        ("le", "at most", lambda b: v <= b),
    ):
        if key in meta and not ok(meta[key]):
            raise fail(loc, f"must be {words} {meta[key]}, got {brief(v)}")
