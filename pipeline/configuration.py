"""Typed parsing of TOML tables into frozen dataclasses.

Every section of the build file is a frozen, keyword-only dataclass with a docstring under each field.
`parse_dataclass` turns a TOML table into one, checking every key and type, so that a typo or a wrong type
fails at load time with the file and the dotted key named, never later inside a Spark task.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pipeline.errors import UserError


class ConfigError(UserError, ValueError):
    """A build file that cannot be used: the message names the file, the key and what to do."""


def parse_dataclass(cls: type, table: Any, where: str, source: str) -> Any:
    """Build `cls` from a TOML table; `where` is the dotted key of the table, `source` the file."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{where}] must be a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {_join(where, unknown[0])!r}; "
            f"valid keys of [{where or 'top level'}] are: {', '.join(sorted(fields))}"
        )
    values = {}
    for name, field in fields.items():
        key = _join(where, name)
        if name in table:
            values[name] = _convert(hints[name], table[name], key, source)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key {key!r}")
    try:
        return cls(**values)
    except ValueError as err:  # __post_init__ validation: add the location
        raise ConfigError(f"{source}: [{where}] {err}") from err


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _convert(hint: Any, value: Any, key: str, source: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return parse_dataclass(hint, value, key, source)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key, source)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{source}: {key!r} has an invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{source}: {key!r} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key!r} must be a list, got {type(value).__name__}")
        (item,) = get_args(hint)[:1]
        items = [_convert(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key!r} must be a table, got {type(value).__name__}")
        _, item = get_args(hint)
        return {str(k): _convert(item, v, f"{key}.{k}", source) for k, v in value.items()}
    return _scalar(hint, value, key, source)


def _scalar(hint: Any, value: Any, key: str, source: str) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{source}: {key!r} must be an integer, got a boolean")
    if not isinstance(value, hint):
        raise ConfigError(f"{source}: {key!r} must be {_type_name(hint)}, got {type(value).__name__} {value!r}")
    return value


def _type_name(hint: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, str(hint))


def require(condition: bool, message: str) -> None:
    """Validation inside a dataclass's __post_init__: the parser adds file and table to the message."""
    if not condition:
        raise ValueError(message)
