"""Validated, frozen config sections without pydantic (the device agent's ~15 MB it cannot afford).

A :class:`Section` is a frozen, keyword-only dataclass whose fields are checked on construction: the
declared type (``int``, ``float``, ``str``, ``bool``, ``Path``, ``X | None``, nested sections, no
bool-for-number or str-for-number coercion; ints are accepted for floats), the bounds given with
:func:`bounded`, then the section's own cross-field rule (:meth:`Section._validate`).
:meth:`Section.from_dict` builds one from parsed TOML, refusing unknown keys. Every problem raises
:class:`SectionError` (a ``ValueError``) naming the dotted key.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, ClassVar, Self

from firmware_stubs.typecheck import Rules, brief, check_bounds, check_value


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


def _nested(tp: Any, v: Any, loc: tuple[str, ...]) -> Any:
    if not (isinstance(tp, type) and issubclass(tp, Section)):
        return NotImplemented
    if isinstance(v, tp):
        return v
    if isinstance(v, dict):
        return tp.from_dict(v, loc)
    raise SectionError(loc, f"must be a table of settings, got {brief(v)}")


_RULES = Rules(fail=SectionError, join=lambda loc, key: (*loc, str(key)), nested=_nested)


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
            new = check_value(hints[f.name], v, (f.name,), _RULES)
            if new is not None and f.metadata:
                check_bounds(f.metadata, new, (f.name,), SectionError)
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
