"""Validated, frozen config sections without pydantic (the device agent's ~15 MB it cannot afford).

A :class:`Section` is a frozen, keyword-only dataclass whose fields are checked on construction: the
declared type (``int``, ``float``, ``str``, ``bool``, ``Path``, ``X | None``, nested sections, no
bool-for-number or str-for-number coercion; ints are accepted for floats), the bounds given with
:func:`bounded`, then the section's own cross-field rule (:meth:`Section._validate`).
:meth:`Section.from_dict` builds one from parsed TOML, refusing unknown keys. Every problem raises
:class:`SectionError` (a ``ValueError``) naming the dotted key.
"""

from __future__ import annotations

import math
import os
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Self, get_args, get_origin


class SectionError(ValueError):
    """A bad config value; ``loc`` is the dotted key path, ``msg`` what is wrong with it."""

    def __init__(self, loc: tuple[str, ...], msg: str) -> None:
        self.loc = loc
        self.msg = msg
        super().__init__(f"{'.'.join(loc) or '(top level)'}: {msg}")


def bounded(
    default: Any = MISSING,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    default_factory: Any = MISSING,
) -> Any:
    """A dataclass field with numeric bounds (checked when the value is not None)."""
    meta = {k: v for k, v in (("gt", gt), ("ge", ge), ("le", le)) if v is not None}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def _brief(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_bounds(f: Field[Any], v: float, loc: tuple[str, ...]) -> None:
    m = f.metadata
    if "gt" in m and not v > m["gt"]:
        raise SectionError(loc, f"must be greater than {m['gt']}, got {_brief(v)}")
    if "ge" in m and not v >= m["ge"]:
        raise SectionError(loc, f"must be at least {m['ge']}, got {_brief(v)}")
    if "le" in m and not v <= m["le"]:
        raise SectionError(loc, f"must be at most {m['le']}, got {_brief(v)}")


def _coerce(tp: Any, v: Any, loc: tuple[str, ...]) -> Any:
    if get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        if v is None and len(args) < len(get_args(tp)):
            return None
        tp = args[0]
    if isinstance(tp, type) and issubclass(tp, Section):
        if isinstance(v, tp):
            return v
        if isinstance(v, dict):
            return tp.from_dict(v, loc)
        raise SectionError(loc, f"must be a table of settings, got {_brief(v)}")
    if tp is bool:
        if not isinstance(v, bool):
            raise SectionError(loc, f"must be true or false, got {_brief(v)}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise SectionError(loc, f"must be an integer, got {_brief(v)}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SectionError(loc, f"must be a number, got {_brief(v)}")
        if not math.isfinite(v):
            raise SectionError(loc, f"must be finite, got {_brief(v)}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise SectionError(loc, f"must be a string, got {_brief(v)}")
        return v
    if tp is Path:
        if not isinstance(v, (str, os.PathLike)):
            raise SectionError(loc, f"must be a path, got {_brief(v)}")
        return Path(v)
    raise TypeError(f"{loc}: unsupported section field type {tp!r}")  # a programming error


@dataclass(frozen=True, kw_only=True)
class Section:
    """Base of the agent's config sections; see the module doc."""

    _hints: ClassVar[dict[type, dict[str, Any]]] = {}

    @classmethod
    def _types(cls) -> dict[str, Any]:
        hints = Section._hints.get(cls)
        if hints is None:
            hints = typing.get_type_hints(cls)
            Section._hints[cls] = hints
        return hints

    def __post_init__(self) -> None:
        hints = self._types()
        for f in fields(self):
            v = getattr(self, f.name)
            new = _coerce(hints[f.name], v, (f.name,))
            if new is not None and f.metadata:
                _check_bounds(f, new, (f.name,))
            if new is not v:
                object.__setattr__(self, f.name, new)
        self._validate()

    def _validate(self) -> None:
        """Cross-field rules; raise SectionError(("key",), "...")."""

    @classmethod
    def from_dict(cls, data: dict[str, Any], loc: tuple[str, ...] = ()) -> Self:
        """Build from parsed TOML: unknown keys and missing required keys are errors naming the key."""
        known = {f.name: f for f in fields(cls)}
        for key in data:
            if key not in known:
                raise SectionError((*loc, str(key)), f"unknown key (known: {', '.join(known)})")
        for name, f in known.items():
            if name not in data and f.default is MISSING and f.default_factory is MISSING:
                raise SectionError((*loc, name), "field required")
        try:
            return cls(**data)
        except SectionError as exc:  # re-anchor at this section's key
            raise SectionError((*loc, *exc.loc), exc.msg) from None

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Self:
        """A changed copy, validated (the name pydantic callers already use)."""
        return replace(self, **(update or {}))
