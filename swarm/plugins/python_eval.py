"""The `python_eval` task: evaluate one restricted Python expression over given variables.

The grammar and its limits live in `swarm.plugins.safe_eval`; this module adapts it to the task API and
turns the value into JSON. `validate` parses and vets the expression without running it, so a coordinator
can reject a forbidden expression before placing it; it raises nothing but `InvalidPayload`, whatever the
source (a nesting bomb included), because the scheduler validates whole batches at once. A failure at run
time (a limit hit, a division by zero) raises `Fatal`: the evaluation is deterministic, so another attempt
on another node would fail the same way.

Limits (defaults; the payload may lower or raise the first two, up to the cap):

* `budget` (10^7, at most 10^8): the elements, characters and integer words the evaluation may build or
  touch in total, and the largest a single value may be ("the expression would build/touch N elements,
  over the limit of M"). See `swarm.plugins.safe_eval` for what each operation costs.
* `max_result_bytes` (1 MiB, at most 16 MiB, the worker's own cap on a reply): the size of the result as
  JSON, measured while it is converted, so an oversized result is refused without ever being built.
* Fixed: 10 000 characters of source, 100 levels of nesting ("expression nested too deeply (limit 100)"),
  10^6 evaluation steps, 10^6 items per string or collection, 100 000 bits per integer, results nested
  at most 254 levels (the JSON encoder's limit).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sized
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from swarm import __version__
from swarm.errors import Fatal, InvalidPayload
from swarm.plugins.safe_eval import EvalError, check, evaluate
from swarm.plugins.safe_eval_grammar import DEFAULT_LIMITS, Limits, too_deep
from swarm.taskapi import TaskContext

__all__ = [
    "DEFAULT_RESULT_BYTES",
    "MAX_BUDGET",
    "MAX_RESULT_BYTES",
    "PythonEvalHandler",
    "handler",
    "to_json",
]

DEFAULT_RESULT_BYTES = 1 << 20
MAX_RESULT_BYTES = 16 << 20
MAX_BUDGET = 100_000_000
_MAX_RESULT_DEPTH = 254  # orjson stops at 255 levels, and the worker's reply wraps the result in one
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# A str.translate table deleting the characters JSON must escape.
_CONTROLS: Mapping[int, None] = MappingProxyType(dict.fromkeys(range(32)))
_FIELDS = frozenset({"expression", "variables", "previous", "budget", "max_result_bytes"})


class _Meter:
    """Counts the bytes of the JSON text a result will become, failing as soon as it passes the cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def add(self, size: int) -> None:
        self.ensure(size)
        self.used += size

    def ensure(self, size: int) -> None:
        """Fail now if `size` more bytes would not fit (an early refusal, before the work)."""
        if self.used + size > self.limit:
            raise Fatal(
                f"python_eval: the result is larger than {self.limit} bytes as JSON "
                f"(raise 'max_result_bytes', up to {MAX_RESULT_BYTES})"
            )


def to_json(value: Any, max_bytes: int = DEFAULT_RESULT_BYTES) -> Any:
    """Turn tuples, sets, iterators and non-string keys into their JSON shapes, like `json.dumps` would.

    Integers outside the signed 64-bit range become decimal strings: the wire format (orjson) cannot
    carry them as numbers, and the digits are what someone computing `2 ** 100` wants. The JSON size is
    counted as the copy is made, and `Fatal` is raised once it passes `max_bytes`, so a result such as a
    million references to one long string fails after about `max_bytes` of work. The walk keeps its own
    stack, so a result may nest deeper than the interpreter's stack allows.
    """
    return _to_json(value, _Meter(max_bytes), 0)


def _to_json(value: Any, meter: _Meter, depth: int) -> Any:
    top: list[Any] = []
    stack: list[tuple[Iterator[tuple[str, Any]], list[Any] | dict[str, Any]]] = [(iter([("", value)]), top)]
    while stack:
        items, into = stack[-1]
        entry = next(items, None)
        if entry is None:
            stack.pop()
            continue
        key, item = entry
        converted, children = _convert(item, meter, depth + len(stack))
        if isinstance(into, dict):
            into[key] = converted
        else:
            if into:
                meter.add(1)  # the comma
            into.append(converted)
        if children is not None:
            if depth + len(stack) > _MAX_RESULT_DEPTH:
                raise Fatal(f"python_eval: the result is nested deeper than {_MAX_RESULT_DEPTH} levels")
            stack.append((children, converted))
    return top[0]


def _convert(value: Any, meter: _Meter, depth: int) -> tuple[Any, Iterator[tuple[str, Any]] | None]:
    """One node of the result: its JSON form, and its items still to convert if it is a container."""
    if value is None or isinstance(value, bool):
        meter.add(4 if value is not False else 5)
        return value, None
    if isinstance(value, int):
        return _integer(value, meter), None
    if isinstance(value, float):
        meter.add(max(4, len(repr(value))))  # never shorter than orjson's form; nan and inf become null
        return value, None
    if isinstance(value, str):
        meter.add(_string_bytes(value, meter))
        return value, None
    if not isinstance(value, Iterable) or isinstance(value, bytes | bytearray):
        raise Fatal(f"python_eval: a value of type {type(value).__name__} cannot be part of a JSON result")
    if isinstance(value, Sized):  # each item takes at least a byte: refuse a huge container at once
        meter.ensure(2 + 2 * len(value) - 1)
    meter.add(2)  # the brackets; items and commas are counted as they are converted
    if isinstance(value, dict):
        return {}, _entries(value, meter)
    if isinstance(value, set | frozenset):
        return _sorted_set(value, meter, depth), None
    # lists, tuples, ranges, generators, zip/enumerate/reversed iterators, dict views
    return [], (("", item) for item in value)


def _sorted_set(items: set[Any] | frozenset[Any], meter: _Meter, depth: int) -> list[Any]:
    """A set as a sorted list. Its items are converted (and so measured) before sorting, so sorting
    never compares more than the cap allows, however long the items' common prefixes."""
    pairs = []
    for index, item in enumerate(items):
        meter.add(1 if index else 0)
        pairs.append((item, _to_json(item, meter, depth + 1)))
    with contextlib.suppress(TypeError):  # mixed types: keep the set's own order
        pairs.sort(key=_first)
    return [converted for _, converted in pairs]


def _first(pair: tuple[Any, Any]) -> Any:
    return pair[0]


def _integer(value: int, meter: _Meter) -> int | str:
    if _INT64_MIN <= value <= _INT64_MAX:
        meter.add(len(str(value)))
        return value
    meter.ensure((value.bit_length() - 1) * 30103 // 100000 + 3)  # at least this many, before printing
    try:
        digits = str(value)
    except ValueError:  # Python's own limit on converting huge integers to decimal
        raise Fatal(
            f"python_eval: the result holds an integer too large to print ({value.bit_length()} bits)"
        ) from None
    meter.add(len(digits) + 2)
    return digits


def _string_bytes(text: str, meter: _Meter) -> int:
    """Bytes of `text` as a JSON string; checks the length first so a huge string is never encoded."""
    if len(text) > meter.limit - meter.used:
        return len(text)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise Fatal("python_eval: the result holds a string that is not valid UTF-8") from None
    size += 2 + text.count('"') + text.count("\\")
    if not text.isprintable():
        controls = len(text) - len(text.translate(_CONTROLS))
        short = sum(map(text.count, "\b\f\n\r\t"))  # written as \n and the like, the rest as \u00XX
        size += short + 5 * (controls - short)
    return size


def _entries(mapping: dict[Any, Any], meter: _Meter) -> Iterator[tuple[str, Any]]:
    for index, (key, item) in enumerate(mapping.items()):
        name = key if isinstance(key, str) else _key(key)
        meter.add(_string_bytes(name, meter) + (2 if index else 1))  # the key, its colon, a comma
        yield name, item


def _key(key: Any) -> str:
    if key is None or isinstance(key, bool):
        return {None: "null", True: "true", False: "false"}[key]
    if isinstance(key, float):
        return repr(key)
    if isinstance(key, int):
        try:
            return repr(key)
        except ValueError:  # Python's own limit on converting huge integers to decimal
            raise Fatal(f"python_eval: dict key of {key.bit_length()} bits is too large to print") from None
    raise Fatal(f"python_eval: dict key of type {type(key).__name__} cannot be a JSON object key")


def _option(payload: dict[str, Any], name: str, default: int, cap: int) -> int:
    value = payload.get(name, default)
    if type(value) is not int or not 1 <= value <= cap:
        raise InvalidPayload(f"python_eval: {name!r} must be an integer from 1 to {cap}")
    return value


def _limits(payload: dict[str, Any]) -> tuple[Limits, int]:
    budget = _option(payload, "budget", DEFAULT_LIMITS.max_total, MAX_BUDGET)
    result_bytes = _option(payload, "max_result_bytes", DEFAULT_RESULT_BYTES, MAX_RESULT_BYTES)
    return replace(DEFAULT_LIMITS, max_total=budget), result_bytes


class PythonEvalHandler:
    """`{"expression": str, "variables": {name: value}, "budget"?: int, "max_result_bytes"?: int}`.

    Returns the expression's value as JSON. In a chain the payload also carries `previous` (the preceding
    task's result), which the expression sees as the variable `previous`.
    """

    name = "python_eval"
    version = __version__

    def validate(self, payload: dict[str, Any]) -> None:
        """Check the payload's shape and vet the expression; raise only `InvalidPayload`."""
        try:
            self._validate(payload)
            return
        except InvalidPayload:
            raise
        except RecursionError:
            failure = too_deep(DEFAULT_LIMITS)
        except MemoryError:
            failure = "out of memory while checking the expression"
        except Exception as exc:  # anything else would escape the scheduler's batch validation
            failure = f"the payload could not be checked: {type(exc).__name__}: {str(exc)[:200]}"
        raise InvalidPayload(f"python_eval: {failure}")

    def _validate(self, payload: dict[str, Any]) -> None:
        if not isinstance(payload, dict):
            raise InvalidPayload("python_eval: payload must be a JSON object")
        unknown = set(payload) - _FIELDS
        if unknown:
            raise InvalidPayload(f"python_eval: unexpected fields {sorted(unknown)}")
        variables = payload.get("variables", {})
        if not isinstance(variables, dict):
            raise InvalidPayload("python_eval: 'variables' must be a JSON object")
        for name in variables:
            if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
                raise InvalidPayload(f"python_eval: variable name {name!r} is not allowed")
        expression = payload.get("expression")
        if not isinstance(expression, str):
            raise InvalidPayload("python_eval: 'expression' must be a string")
        limits, _ = _limits(payload)
        try:
            check(expression, _names(payload), limits)
        except InvalidPayload as exc:
            raise InvalidPayload(f"python_eval: {exc}") from None

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Evaluate and return the JSON form of the value; evaluation errors are final (`Fatal`)."""
        limits, result_bytes = _limits(payload)
        try:
            # Converting inside the same guard: a lazy result (a generator) is evaluated as it is converted.
            return to_json(evaluate(payload["expression"], _names(payload), limits), result_bytes)
        except EvalError as exc:
            failure = str(exc)
        except RecursionError:
            failure = too_deep(limits)
        except MemoryError:
            failure = "out of memory"
        # Raised outside the handler, so the failed frames (and the values they hold) are freed first.
        raise Fatal(f"python_eval: {failure}")


def _names(payload: dict[str, Any]) -> dict[str, Any]:
    names = dict(payload.get("variables") or {})
    if "previous" in payload:
        names["previous"] = payload["previous"]
    return names


handler = PythonEvalHandler()
