"""Dataclasses built from plain data (YAML, JSON), strictly: the one loader behind params.yaml and a mapper's config.

Unknown, missing or mistyped keys, floats that are not finite, and ``__post_init__`` range checks (:func:`check`)
fail with one line that names the key by its whole path (``train.lr: expected float, got str 'fast'``). A field with
a default may be left out.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from a2i_core.core.errors import A2IError


class ParamsError(A2IError):
    pass


def check(condition: bool, key: str, message: str) -> None:
    """For a dataclass's ``__post_init__``: the loader turns the error into one line with the key's whole path."""
    if not condition:
        raise ValueError(f"{key}: {message}")


def typed_from_dict(cls: type, raw: Any, source: str) -> Any:
    """Any dataclass built like params (a mapper's config.json, say): unknown, missing, mistyped or out-of-range
    values fail with one line naming the key."""
    try:
        return _build(cls, raw, "")
    except ParamsError as err:
        raise ParamsError(f"{source}: {err}") from None


def _build(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, dict):
        raise ParamsError(f"{path or 'top level'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(f"{_join(path, unknown[0])}: unknown key (known: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        key = _join(path, name)
        if name not in raw:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise ParamsError(f"{key}: missing")
        kwargs[name] = _convert(hints[name], raw[name], key)
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ParamsError(f"{_join(path, str(err))}") from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _convert(inner, value, key)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ParamsError(f"{key}: must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return {str(k): _convert(item, v, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ParamsError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        items = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise ParamsError(f"{key}: expected a list of {len(items)} values, got {value!r}")
        return tuple(_convert(item, v, f"{key}[{i}]") for i, (item, v) in enumerate(zip(items, value, strict=True)))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if abs(value) < 2**1023 else math.inf  # float() of a larger int raises
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ParamsError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    if hint is float and not math.isfinite(value):
        # YAML reads 1e309 as inf: no learning rate, weight or scale is meant to be infinite or nan.
        raise ParamsError(f"{key}: must be a finite number, got {value!r}")
    return value
