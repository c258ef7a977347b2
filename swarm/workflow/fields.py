"""Reading the JSON objects of the workflow layer field by field, every error naming the exact field path.

`DefinitionError` (`nodes[2].executionConfig.timeout: ...`) and `NotApplied` live here, the lowest module
of the workflow layer, so that the definition parser, the task standards and the allocation request share
them and the typed readers (`FieldReader`, `open_object`) without importing each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarm.errors import InvalidSpec
from swarm.workflow.durations import duration_seconds

__all__ = [
    "DefinitionError",
    "FieldReader",
    "NotApplied",
    "check_json_value",
    "describe",
    "expect_object",
    "join_path",
    "open_object",
    "parse_duration",
]


class DefinitionError(InvalidSpec):
    """A DAG definition (or a part of it) is invalid; `path` names the field, e.g. `nodes[2].nodeId`."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


def parse_duration(text: str, path: str) -> float:
    """Seconds in the ISO-8601 duration `text`; raise DefinitionError naming `path` when it is not one."""
    if not isinstance(text, str):
        raise DefinitionError(path, f"expected an ISO-8601 duration like PT30M, got {type(text).__name__}")
    try:
        return duration_seconds(text)
    except ValueError as exc:
        raise DefinitionError(path, str(exc)) from None


@dataclass(frozen=True, slots=True)
class NotApplied:
    """A field the definition gave that swarm accepts but does not act on, and why."""

    path: str
    reason: str


def join_path(path: str, key: str) -> str:
    """`path.key`, or `key` at the root."""
    return f"{path}.{key}" if path else key


def describe(value: object) -> str:
    """'an object', 'a string', ... for error messages."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def expect_object(value: object, path: str) -> dict[str, Any]:
    """`value` if it is a JSON object, else DefinitionError."""
    if not isinstance(value, dict):
        raise DefinitionError(path or "definition", f"expected an object, got {describe(value)}")
    return value


def check_json_value(value: object, path: str) -> None:
    """Refuse what JSON cannot carry (YAML dates, sets, non-string keys, NaN), without recursion."""
    stack: list[tuple[object, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise DefinitionError(where, f"object keys must be strings, got {key!r}")
                stack.append((inner, join_path(where, key)))
        elif isinstance(item, list):
            stack.extend((inner, f"{where}[{i}]") for i, inner in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise DefinitionError(where, "NaN and infinity are not JSON numbers")
        elif item is not None and not isinstance(item, str | int | float | bool):
            raise DefinitionError(where, f"expected a JSON value, got {type(item).__name__} {item!r}")


class FieldReader:
    """Typed access to the keys of one JSON object."""

    __slots__ = ("data", "path")

    def __init__(self, data: dict[str, Any], path: str) -> None:
        self.data = data
        self.path = path

    def at(self, key: str) -> str:
        """The path of `key` in this object."""
        return join_path(self.path, key)

    def req_str(self, key: str) -> str:
        """A required non-empty string."""
        value = self.opt_str(key)
        if value is None:
            raise DefinitionError(self.at(key), "required")
        return value

    def opt_str(self, key: str) -> str | None:
        """A non-empty string, or None when absent or null."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value or value.isspace():
            raise DefinitionError(self.at(key), f"expected a non-empty string, got {describe(value)}")
        return value

    def number(self, key: str, default: float, minimum: float = 0) -> float:
        """A finite number >= minimum (an int stays an int)."""
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DefinitionError(self.at(key), f"expected a number, got {describe(value)}")
        if not math.isfinite(value) or value < minimum:
            raise DefinitionError(self.at(key), f"must be a finite number >= {minimum}, got {value}")
        return value

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        """An integer >= minimum (2.0 is read as 2)."""
        value = self.data.get(key, default)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise DefinitionError(self.at(key), f"expected an integer, got {describe(value)}")
        if value < minimum:
            raise DefinitionError(self.at(key), f"must be >= {minimum}, got {value}")
        return value

    def opt_int(self, key: str, minimum: int = 0) -> int | None:
        """An integer >= minimum, or None when absent or null."""
        return None if self.data.get(key) is None else self.integer(key, 0, minimum)

    def flag(self, key: str, default: bool = False) -> bool:
        """A boolean."""
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise DefinitionError(self.at(key), f"expected true or false, got {describe(value)}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        """One of `choices`."""
        value = self.data.get(key, default)
        if value not in choices:
            raise DefinitionError(self.at(key), f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    def duration(self, key: str) -> float | None:
        """Seconds of an ISO-8601 duration, or None when absent."""
        value = self.data.get(key)
        return None if value is None else parse_duration(value, self.at(key))


def open_object(
    value: object,
    path: str,
    known: tuple[str, ...],
    notes: list[NotApplied] | None = None,
    ignored: Mapping[str, str] | None = None,
) -> tuple[FieldReader, dict[str, Any]]:
    """A reader over `value`; unknown keys are errors, `ignored` ones are returned and noted not applied."""
    data = expect_object(value, path)
    extras: dict[str, Any] = {}
    for key in data:
        if key in known:
            continue
        if ignored and key in ignored and notes is not None:
            check_json_value(data[key], join_path(path, key))
            extras[key] = data[key]
            notes.append(NotApplied(join_path(path, key), ignored[key]))
            continue
        allowed = ", ".join([*known, *(ignored or ())])
        raise DefinitionError(join_path(path, str(key)), f"unknown field (allowed here: {allowed})")
    return FieldReader(data, path), extras
