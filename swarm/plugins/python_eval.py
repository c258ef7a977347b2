"""The `python_eval` task: evaluate one restricted Python expression over given variables.

The grammar and its limits live in `swarm.plugins.safe_eval`; this module only adapts it to the task API.
`validate` parses and vets the expression without running it, so a coordinator can reject a forbidden
expression before placing it. A failure at run time (a limit hit, a division by zero) raises `Fatal`: the
evaluation is deterministic, so another attempt on another node would fail the same way.
"""

from __future__ import annotations

from typing import Any

from swarm import __version__
from swarm.errors import Fatal, InvalidPayload
from swarm.plugins.safe_eval import EvalError, check, evaluate
from swarm.taskapi import TaskContext

__all__ = ["PythonEvalHandler", "handler", "to_json"]

_MAX_RESULT_ITEMS = 1_000_000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def to_json(value: Any) -> Any:
    """Turn tuples, sets, iterators and non-string keys into their JSON shapes, like `json.dumps` would.

    Integers outside the signed 64-bit range become decimal strings: the wire format (orjson) cannot
    carry them as numbers, and the digits are what someone computing `2 ** 100` wants.
    """
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64_MIN <= value <= _INT64_MAX:
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {k if isinstance(k, str) else _key(k): to_json(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        try:
            value = sorted(value)
        except TypeError:  # mixed types: keep the set's own order
            value = list(value)
    items = []
    for item in value:  # lists, tuples, ranges, generators, zip/enumerate/reversed iterators, dict views
        items.append(to_json(item))
        if len(items) > _MAX_RESULT_ITEMS:
            raise Fatal(f"python_eval: result has more than {_MAX_RESULT_ITEMS} items")
    return items


def _key(key: Any) -> str:
    if key is None or isinstance(key, bool):
        return {None: "null", True: "true", False: "false"}[key]
    if isinstance(key, int | float):
        return repr(key)
    raise Fatal(f"python_eval: dict key {key!r} cannot be a JSON object key")


class PythonEvalHandler:
    """`{"expression": str, "variables": {name: value}}` -> the expression's value as JSON.

    In a chain the payload also carries `previous` (the preceding task's result), which the expression
    sees as the variable `previous`.
    """

    name = "python_eval"
    version = __version__

    def validate(self, payload: dict[str, Any]) -> None:
        """Check the payload's shape and vet the expression against the variables it will get."""
        if not isinstance(payload, dict):
            raise InvalidPayload("python_eval: payload must be a JSON object")
        unknown = set(payload) - {"expression", "variables", "previous"}
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
        check(expression, _names(payload))

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Evaluate and return the JSON form of the value; evaluation errors are final (`Fatal`)."""
        try:
            value = evaluate(payload["expression"], _names(payload))
        except EvalError as exc:
            raise Fatal(f"python_eval: {exc}") from None
        return to_json(value)


def _names(payload: dict[str, Any]) -> dict[str, Any]:
    names = dict(payload.get("variables") or {})
    if "previous" in payload:
        names["previous"] = payload["previous"]
    return names


handler = PythonEvalHandler()
