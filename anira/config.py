"""Strict construction of dataclass configs from plain dicts (YAML, papermill parameters).

Unknown keys and wrong types are errors that name the key and what is allowed, so a typo in a
profile or a notebook parameter fails before any work starts (cf. nanoGPT's configurator).
"""
from __future__ import annotations

import dataclasses
import functools
import numbers
import re
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")

# The decision mechanisms, defined once (model, trainer, analyses and figures import them from here).
MECHANISMS = ("fixed", "early", "online", "oracle", "random")  # every mechanism, in the order figures use
ADAPTIVE = ("early", "online")  # the two learned allocations (ANIRA-E, ANIRA-O), trained with the ponder loss
VARYING = ADAPTIVE + ("oracle", "random")  # the mechanisms whose depth varies per token (the controls too)
# Upper bound of every depth setting (max_depth, fixed_depth, eval_max_depth): the study uses at most 16 and a
# step costs one block forward per iteration, so a typo like max_depth=500 (a 69 s step on a CPU) is refused.
MAX_DEPTH = 32


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
    if tp is dict or get_origin(tp) is dict:
        return "a mapping (dict)"
    return getattr(tp, "__name__", str(tp))


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any) -> Any:
    """The conversions a plain-dict value gets: list -> tuple for tuple fields, an integer -> float
    for float fields, NumPy scalars -> Python numbers; anything else is returned unchanged."""
    if isinstance(value, list) and get_origin(tp) is tuple:
        return tuple(value)
    if isinstance(value, bool):
        return value
    if tp is float and isinstance(value, numbers.Real) and type(value) is not float:
        return float(value)
    if tp is int and isinstance(value, numbers.Integral) and type(value) is not int:
        return int(value)
    return value


def _check_value(cls: type, key: str, value: Any, tp: Any, prefix: str = "") -> None:
    if _type_ok(value, tp):
        return
    if get_origin(tp) is Literal and isinstance(value, str):
        raise ValueError(f"{prefix}{cls.__name__}.{key} = {value!r} is not allowed; allowed values: {list(get_args(tp))}")
    raise ValueError(f"{prefix}{cls.__name__}.{key} = {value!r} has the wrong type; expected {_describe(tp)}")


def check_fields(obj: Any) -> None:
    """Type-check every field of the dataclass instance ``obj`` against its annotation, with the
    conversions ``from_dict`` makes (see ``_coerce``); ValueError naming the field, the value and
    the expected type. Config classes call it first in ``__post_init__``, so a direct construction
    is as strict as ``from_dict`` and the range checks after it never compare a string with a number.
    """
    cls = type(obj)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        new = _coerce(value, hints[f.name])
        _check_value(cls, f.name, new, hints[f.name])
        if new is not value:
            object.__setattr__(obj, f.name, new)  # also for frozen dataclasses


def from_dict(cls: type[T], values: dict[str, Any] | None = None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys or wrong types raise ValueError.

    ``where`` (e.g. a file name) is put in front of every message.
    """
    prefix = f"{where}: " if where else ""
    if values is not None and not isinstance(values, dict):
        raise ValueError(f"{prefix}{cls.__name__} = {values!r} has the wrong type; expected a mapping of "
                         f"{cls.__name__} fields")
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        raise ValueError(
            f"{prefix}unknown key(s) {unknown} for {cls.__name__}; allowed keys: {sorted(fields)}"
        )
    for key, value in values.items():
        values[key] = value = _coerce(value, hints[key])
        _check_value(cls, key, value, hints[key], prefix)
    if not prefix:
        return cls(**values)
    try:  # the class's own checks (ranges, combinations) get the same prefix
        return cls(**values)
    except ValueError as err:
        raise ValueError(f"{prefix}{err}") from None


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None, why: str = "") -> None:
    """Raise ValueError naming ``name`` when ``value`` is outside [lo, hi] or is NaN; ``why`` explains the range."""
    if value != value or (lo is not None and value < lo) or (hi is not None and value > hi):  # NaN compares false
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ValueError(f"{name} = {value!r} is out of range; allowed: [{lo_s}, {hi_s}]" + (f" ({why})" if why else ""))


def check_choice(name: str, value: Any, allowed: typing.Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name} = {value!r} is not allowed; allowed values: {allowed}")


def include_fields(*sources: type, exclude: typing.Iterable[str] = (), after: str | None = None):
    """Class decorator, applied *under* ``@dataclass``: give the class every field of the dataclasses
    ``sources`` (but ``exclude``) with the sources' own type and default, so a flat config that
    composes smaller ones (``RunConfig`` = task + ``ModelConfig`` + ``LossConfig`` + the trainer's
    own fields) defines each name once. The fields are inserted after the class's own field
    ``after`` (at the end when None), in the sources' order. A name the class declares itself, or
    that two sources share, is an error (it would be defined twice).
    """
    exclude = set(exclude)

    def decorate(cls: type) -> type:
        own = dict(cls.__dict__.get("__annotations__", {}))
        added: dict[str, Any] = {}
        for src in sources:
            hints = _hints(src)
            for f in dataclasses.fields(src):
                if f.name in exclude or not f.init:
                    continue
                if f.name in own or f.name in added:
                    raise TypeError(f"{cls.__name__}.{f.name} is defined twice (by {src.__name__} and elsewhere)")
                added[f.name] = hints[f.name]
                if f.default_factory is not dataclasses.MISSING:
                    setattr(cls, f.name, dataclasses.field(default_factory=f.default_factory))
                elif f.default is not dataclasses.MISSING:
                    setattr(cls, f.name, f.default)
        if after is not None and after not in own:
            raise TypeError(f"{cls.__name__} has no field {after!r} to insert after")
        order: dict[str, Any] = {}
        for name, tp in own.items():
            order[name] = tp
            if name == after:
                order.update(added)
        if after is None:
            order.update(added)
        cls.__annotations__ = order
        return cls

    return decorate


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a dataclass config (tuples become lists, for YAML/JSON)."""
    def conv(v):
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return {k: conv(v) for k, v in dataclasses.asdict(cfg).items()}


class _YAMLLoader(yaml.SafeLoader):
    """YAML 1.1 (PyYAML) reads a float only with a dot, so ``lr=1e-3`` would arrive as the string
    '1e-3'; this loader also reads 1e-3, 2E5 and 5e+2 as floats, as YAML 1.2 does."""


_YAMLLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                                  list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with exponent floats (1e-3) read as numbers (``_YAMLLoader``): the parser
    of profiles, config files and key=value overrides."""
    return yaml.load(text, Loader=_YAMLLoader)  # noqa: S506 (a SafeLoader subclass)
