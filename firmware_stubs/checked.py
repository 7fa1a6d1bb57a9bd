"""Validated, frozen settings records for the simulated hardware, without pydantic.

The simulated board runs inside the device agent's process (the benchmarks, the fleet simulator), and
pydantic costs that process ~15 MB — more than the agent itself. A :class:`Checked` record is a frozen,
keyword-only dataclass whose fields are checked on construction: the declared type (``float`` takes
ints, never bools; ``Literal`` values; ``StrEnum`` members from their values; ``tuple[float, float]``;
nested records), the bounds declared with :func:`spec` (finite unless ``allow_inf_nan``), then the
record's own cross-field rule (:meth:`Checked._validate`). Unknown keywords are a ``TypeError``
(dataclass); every bad value raises :class:`SpecError` (a ``ValueError``) naming the field.
"""

from __future__ import annotations

import copy
import enum
import math
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal, Self, get_args, get_origin


class SpecError(ValueError):
    """A bad settings value; the message starts with the field's name."""

    def __init__(self, name: str, msg: str) -> None:
        self.field = name
        super().__init__(f"{name}: {msg}")


def spec(
    default: Any = MISSING,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    allow_inf_nan: bool = False,
) -> Any:
    """A dataclass field with numeric bounds (checked when the value is not None)."""
    bounds = (("gt", gt), ("ge", ge), ("lt", lt), ("le", le))
    meta: dict[str, Any] = {k: v for k, v in bounds if v is not None}
    meta["allow_inf_nan"] = allow_inf_nan
    return field(default=default, metadata=meta)


def _number(v: Any, name: str, *, allow_inf_nan: bool) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(name, f"must be a number, got {v!r}")
    if not allow_inf_nan and not math.isfinite(v):
        raise SpecError(name, f"must be a finite number, got {v!r}")
    return float(v)


def _coerce(tp: Any, v: Any, name: str, allow_inf_nan: bool) -> Any:
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        if v is None and len(args) < len(get_args(tp)):
            return None
        return _coerce(args[0], v, name, allow_inf_nan)
    if origin is Literal:
        if isinstance(v, bool) or v not in get_args(tp):
            raise SpecError(name, f"must be one of {get_args(tp)}, got {v!r}")
        return v
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(v, (tuple, list)) or len(v) != len(args):
            raise SpecError(name, f"must be a pair of numbers, got {v!r}")
        return tuple(_coerce(a, x, name, allow_inf_nan) for a, x in zip(args, v, strict=True))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(v)
        except ValueError:
            raise SpecError(name, f"must be one of {[m.value for m in tp]}, got {v!r}") from None
    if isinstance(tp, type) and issubclass(tp, Checked):
        if isinstance(v, tp):
            return v
        if isinstance(v, dict):
            return tp(**v)
        raise SpecError(name, f"must be a {tp.__name__}, got {v!r}")
    if tp is float:
        return _number(v, name, allow_inf_nan=allow_inf_nan)
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(name, f"must be an integer, got {v!r}")
        return v
    if tp is bool:
        if not isinstance(v, bool):
            raise SpecError(name, f"must be true or false, got {v!r}")
        return v
    if tp is str:
        if not isinstance(v, str):
            raise SpecError(name, f"must be a string, got {v!r}")
        return v
    raise TypeError(f"{name}: unsupported field type {tp!r}")  # a programming error


@dataclass(frozen=True, kw_only=True)
class Checked:
    """Base of the simulator's validated settings records; see the module doc."""

    _hints: ClassVar[dict[type, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        hints = Checked._hints.get(type(self))
        if hints is None:
            hints = Checked._hints[type(self)] = typing.get_type_hints(type(self))
        for f in fields(self):
            v = getattr(self, f.name)
            m = f.metadata
            new = _coerce(hints[f.name], v, f.name, bool(m.get("allow_inf_nan", False)))
            if new is not None and m:
                for key, ok in (("gt", new > m.get("gt", -math.inf)), ("ge", new >= m.get("ge", -math.inf)),
                                ("lt", new < m.get("lt", math.inf)), ("le", new <= m.get("le", math.inf))):
                    if key in m and not ok:
                        words = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}
                        raise SpecError(f.name, f"must be {words[key]} {m[key]}, got {new!r}")
            if new is not v:
                object.__setattr__(self, f.name, new)
        self._validate()

    def _validate(self) -> None:
        """Cross-field rules; raise SpecError("field", "...")."""

    def model_dump(self) -> dict[str, Any]:
        """The fields as a dict (the name the pydantic records had)."""
        return asdict(self)

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Self:
        """A changed copy (like pydantic's, the update is not re-validated)."""
        new = copy.copy(self)
        for k, v in (update or {}).items():
            object.__setattr__(new, k, v)
        return new
