"""The base of every message body: a frozen dataclass read from and written to the wire.

A body class lists its fields with types; :meth:`Body.from_body` checks a received map
against them (``malformed`` naming the field otherwise) and :meth:`Body.to_body` writes
one. Fields typed ``X | None`` are optional (absent or nil on the wire). Fields a reader
does not know are ignored, so a publisher can add some without breaking older readers.
A field may name its own ``check`` (``meta(check=...)``): it then owns the field's whole
validation, absent value (``None``) included, so a service keeps its own codes (an amount
is ``bad_amount``, an id is checked against the id charset). Bodies with rules of their own
(the price update's hot path, the bid grammar, the SLS query) override ``from_body`` and
keep the declared fields as their documentation. The wording of ``malformed`` is that of
:mod:`tycoon.bus.schema`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from tycoon.errors import Rejected

WIRE_TYPES: dict[Any, str] = {
    str: "str", int: "int", float: "float", bool: "bool", bytes: "bin", dict: "map",
    list: "array", Any: "any",
}
"""Python field type → the msgpack type written in docs/protocol.md."""


WIRE_WORDS: dict[str, str] = {
    "str": "a string", "bin": "binary", "map": "a map", "array": "an array", "bool": "a boolean",
}
"""How a ``malformed`` message names a wire type (as :mod:`tycoon.bus.schema` does)."""


def meta(doc: str = "", *, max_len: int | None = None, wire: str = "",
         check: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """A field's metadata (``dataclasses.field(metadata=meta(...))``): its documentation,
    its length bound (str, bin, array, map), its wire type if it is not the plain msgpack
    type of its annotation (``wire``), and a ``check`` that replaces the type check: called
    with the received value (``None`` when absent), it returns the value or raises."""
    return {"doc": doc, "max_len": max_len, "wire": wire, "check": check}


@dataclass(frozen=True)
class Spec:
    """One field as the wire sees it."""

    name: str
    """The name on the wire (a Python field ``from_`` is ``from``)."""
    type: Any
    optional: bool
    wire: str
    doc: str
    max_len: int | None
    attr: str
    """The dataclass attribute."""
    check: Callable[[Any], Any] | None = None
    """The field's own validation, if it has one (see :func:`meta`)."""


def _origin(annotation: Any) -> tuple[Any, bool]:
    """(the base type, whether ``None`` is allowed) of an annotation."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        base, _ = _origin(args[0])
        return base, True
    origin = typing.get_origin(annotation)
    return (origin or annotation), False


@dataclass(frozen=True, slots=True)
class Body:
    """A message body. Subclasses set ``KINDS`` (the kinds whose body this is) and
    ``SUMMARY`` (one line for docs/protocol.md)."""

    KINDS: ClassVar[tuple[str, ...]] = ()
    SUMMARY: ClassVar[str] = ""

    @classmethod
    def specs(cls) -> tuple[Spec, ...]:
        """The wire fields, in declaration order."""
        cached = cls.__dict__.get("_specs_cache")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            base, optional = _origin(hints[f.name])
            optional = optional or f.default is not dataclasses.MISSING \
                or f.default_factory is not dataclasses.MISSING
            wire = f.metadata.get("wire") or WIRE_TYPES.get(base, "any")
            out.append(Spec(f.name.rstrip("_"), base, optional, wire, f.metadata.get("doc", ""),
                            f.metadata.get("max_len"), f.name, f.metadata.get("check")))
        specs = tuple(out)
        type.__setattr__(cls, "_specs_cache", specs)
        return specs

    @classmethod
    def _plan(cls) -> tuple[tuple[str, str, bool, bool, Callable[[Any], Any], bool], ...]:
        """Per field, once per class: (wire name, attribute, optional, has its own check,
        reader, nested body)."""
        plan = _PLANS.get(cls)
        if plan is not None:
            return plan
        plan = _PLANS[cls] = tuple(
            (s.name, s.attr, s.optional, s.check is not None, s.check or _reader(s),
             isinstance(s.type, type) and issubclass(s.type, Body))
            for s in cls.specs())
        return plan

    @classmethod
    def from_body(cls, body: Any) -> Any:
        """The typed body, or ``Rejected("malformed")`` naming the first bad field."""
        if not isinstance(body, dict):
            raise Rejected("malformed", "body must be a map")
        values: dict[str, Any] = {}
        for name, attr, optional, own, read, _ in _PLANS.get(cls) or cls._plan():
            value = body.get(name)
            if value is None and not own:
                if not optional:
                    raise Rejected("malformed", f"missing field {name!r}")
                continue
            values[attr] = read(value)
        return cls(**values)

    def to_body(self) -> dict[str, Any]:
        """The wire body: every field, optional ones only when set."""
        out: dict[str, Any] = {}
        for name, attr, optional, _, _, nested in _PLANS.get(type(self)) or self._plan():
            value = getattr(self, attr)
            if value is None:
                if optional:
                    continue
            elif nested:
                value = value.to_body()
            out[name] = value
        return out


_PLANS: dict[type, tuple[tuple[str, str, bool, bool, Callable[[Any], Any], bool], ...]] = {}
"""Each body class's :meth:`Body._plan`."""


def _reader(spec: Spec) -> Callable[[Any], Any]:
    """The check of one field's received value (not None): a fast path for a value of
    exactly the declared type, :func:`_checked` for every other (and its refusals)."""
    base, max_len = spec.type, spec.max_len
    if base is Any:
        return lambda value: value
    if base is float:
        return lambda value: value if value.__class__ is float and math.isfinite(value) \
            else _checked(spec, value)
    if max_len is None:
        return lambda value: value if value.__class__ is base else _checked(spec, value)
    return lambda value: value if value.__class__ is base and len(value) <= max_len \
        else _checked(spec, value)


def _checked(spec: Spec, value: Any) -> Any:
    base, name = spec.type, spec.name
    if base is Any:
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise Rejected("malformed", f"field {name!r} must be a finite number")
        return float(value)
    if base is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise Rejected("malformed", f"field {name!r} must be an integer")
    if isinstance(base, type) and issubclass(base, Body):
        return base.from_body(value)
    if isinstance(base, type) and base is not int and not isinstance(value, base):
        word = WIRE_WORDS.get(spec.wire, spec.wire)
        raise Rejected("malformed", f"field {name!r} must be {word}")
    if spec.max_len is not None and len(value) > spec.max_len:
        unit = " bytes" if base is bytes else ""
        raise Rejected("malformed", f"field {name!r} is longer than {spec.max_len}{unit}")
    return value
