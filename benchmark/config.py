"""Frozen-dataclass configs with validated overrides.

Every config in the project is a frozen `@dataclass` defined beside the class it configures. Runs
build them with `build_config(cls, overrides)`: an unknown key is an error that names the key and
lists the valid ones, string values from the command line are converted to the field's type, and
each config's `__post_init__` rejects impossible settings with a `ValueError`. A float field takes
only finite numbers (NaN compares false with every bound a `__post_init__` checks, and is not JSON).
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Literal, Mapping, get_args, get_origin


class ConfigError(ValueError):
    """A bad configuration key or value; the message names the key."""


def build_config(cls, overrides: Mapping[str, Any] | None = None, *, where: str = "config"):
    """`cls(**overrides)` with unknown keys and bad values reported by name."""
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} for {cls.__name__} (valid keys: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    values = {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in overrides.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def config_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _coerce(value: Any, hint, where: str):
    """Converts `value` (possibly a command-line string) to the type `hint`, or raises ConfigError."""
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None or value in ("none", "None"):
            return None
        return _coerce(value, args[0], where)
    if origin in (tuple, list):
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.startswith("[") else [v for v in value.split(",") if v]
            except json.JSONDecodeError:
                raise ConfigError(f"{where}: {value!r} is not a list (a,b,c or a JSON list)") from None
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {value!r} is not a list")
        (item_hint, *_) = get_args(hint) or (Any,)
        return tuple(_coerce(v, item_hint, where) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: {value!r} is not a boolean")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not a number")
        try:
            converted = hint(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
            raise ConfigError(f"{where}: {value!r} is not {'an integer' if hint is int else 'a number'}") from None
        if hint is int and isinstance(value, float) and value != converted:
            raise ConfigError(f"{where}: {value!r} is not an integer")
        if hint is float and not math.isfinite(converted):
            raise ConfigError(f"{where}: {value!r} is not a finite number")
        return converted
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {value!r} is not a string")
        return value
    return value


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """["a.b=1", "c=x"] -> {"a.b": "1", "c": "x"}; a missing '=' is a ConfigError."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out
