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
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, Self

from firmware_stubs.typecheck import Rules, check_bounds, check_value


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


def _nested(tp: Any, v: Any, name: str) -> Any:
    if not (isinstance(tp, type) and issubclass(tp, Checked)):
        return NotImplemented
    if isinstance(v, tp):
        return v
    if isinstance(v, dict):
        return tp(**v)
    raise SpecError(name, f"must be a {tp.__name__}, got {v!r}")


def _same_loc(name: str, _key: str | int) -> str:
    return name  # records are flat: an item's error names its field


_RULES = {
    allow: Rules(fail=SpecError, join=_same_loc, nested=_nested, allow_inf_nan=allow)
    for allow in (False, True)
}


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
            new = check_value(hints[f.name], v, f.name, _RULES[bool(m.get("allow_inf_nan", False))])
            if new is not None and m:
                check_bounds(m, new, f.name, SpecError)
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
