"""Strict construction of dataclass configs from plain dicts (YAML, papermill parameters).

Unknown keys and wrong types are errors that name the key and what is allowed, so a typo in a
profile or a notebook parameter fails before any work starts (cf. nanoGPT's configurator).
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

T = TypeVar("T")


def _type_ok(value: Any, tp: Any) -> bool:
    origin = get_origin(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return value in get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return any(_type_ok(value, a) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        args = get_args(tp)
        if not args:
            return True
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        if origin is tuple:
            return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args))
        return all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _describe(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def from_dict(cls: type[T], values: dict[str, Any] | None = None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys or wrong types raise ValueError.

    ``where`` (e.g. a file name) is put in front of every message.
    """
    values = dict(values or {})
    prefix = f"{where}: " if where else ""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"{prefix}unknown key(s) {unknown} for {cls.__name__}; allowed keys: {sorted(fields)}"
        )
    for key, value in values.items():
        tp = hints[key]
        if isinstance(value, list) and get_origin(tp) is tuple:
            values[key] = value = tuple(value)
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            values[key] = value = float(value)
        if not _type_ok(value, tp):
            raise ValueError(
                f"{prefix}{cls.__name__}.{key} = {value!r} has the wrong type; expected {_describe(tp)}"
            )
    return cls(**values)


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None) -> None:
    """Raise ValueError naming ``name`` when ``value`` is outside [lo, hi]."""
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ValueError(f"{name} = {value!r} is out of range; allowed: [{lo_s}, {hi_s}]")


def check_choice(name: str, value: Any, allowed: typing.Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name} = {value!r} is not allowed; allowed values: {allowed}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a dataclass config (tuples become lists, for YAML/JSON)."""
    def conv(v):
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return {k: conv(v) for k, v in dataclasses.asdict(cfg).items()}
