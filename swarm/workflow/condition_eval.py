"""Evaluating an edge condition: its syntax tree compiled into closures, over three-valued logic.

A condition is evaluated once per edge per run, so its tree (`swarm.workflow.condition_syntax`) is
compiled once into closures of (the parent's final state, its outputs). `SUCCESS` holds when the parent
is done, `FAILURE` when it failed or was cancelled, `SKIPPED` when it was skipped, `ALWAYS` in any final
state.

Evaluation uses three-valued (Kleene) logic, as SQL does with NULL: reading a missing output, comparing
values of incompatible types (a number with a string, a boolean with a number), or ordering values that
have no order yields *unknown*; `false AND unknown` is false, `true OR unknown` is true, `NOT unknown` is
unknown, and a condition whose final value is unknown is false. So an absent output or a type mismatch
never makes an edge fire, however the expression is negated, and evaluation never raises for data.
`null` compared with anything is an ordinary equality test; `exists(ref)` is true when the reference
resolves to a value other than null; `x in y` needs a list (or a map: its keys) on the right.

Costs are bounded: an `in` against a list of more than 1,000 items, or an equality between structures of
more than 1,000 items, is unknown rather than a long loop.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

from swarm.workflow.condition_syntax import Bool, Call, Cmp, Lit, Node, Not, Ref, Status

__all__ = ["MAX_LIST_ITEMS", "PARENT_STATES", "BoolFn", "compile_condition"]

MAX_LIST_ITEMS = 1000
PARENT_STATES = frozenset({"done", "failed", "skipped", "cancelled"})

_STATUS_STATES: dict[str, frozenset[str]] = {
    "SUCCESS": frozenset({"done"}),
    "FAILURE": frozenset({"failed", "cancelled"}),
    "SKIPPED": frozenset({"skipped"}),
    "ALWAYS": PARENT_STATES,
}


class _Missing(enum.Enum):
    MISSING = 0


_MISSING = _Missing.MISSING


# ---------------------------------------------------------------------------------------------- values

_Tri = bool | None  # None is "unknown"
#: A compiled condition: (parent state, outputs) -> true, false or None (unknown).
BoolFn = Callable[[str, Mapping[str, Any]], _Tri]
_ValFn = Callable[[str, Mapping[str, Any]], Any]


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "num"
    if isinstance(v, str):
        return "str"
    if isinstance(v, list | tuple):
        return "list"
    if isinstance(v, Mapping):
        return "map"
    return "other"


def _eq(a: Any, b: Any) -> _Tri:
    """Typed equality: None when the kinds differ (a comparison that makes no sense), never raises."""
    if a is None or b is None:
        return a is b
    ka, kb = _kind(a), _kind(b)
    if ka != kb or ka == "other":
        return None
    if ka in ("list", "map"):
        budget = [MAX_LIST_ITEMS]
        same = _deep_eq(a, b, budget)
        return None if budget[0] < 0 else same
    return bool(a == b)


def _deep_eq(a: Any, b: Any, budget: list[int]) -> bool:
    budget[0] -= 1
    if budget[0] < 0:
        return False
    ka, kb = _kind(a), _kind(b)
    if ka != kb:
        return False
    if ka == "list":
        return len(a) == len(b) and all(_deep_eq(x, y, budget) for x, y in zip(a, b, strict=True))
    if ka == "map":
        return a.keys() == b.keys() and all(_deep_eq(a[k], b[k], budget) for k in a)
    return bool(a == b)


def _order(op: str, a: Any, b: Any) -> _Tri:
    ka, kb = _kind(a), _kind(b)
    if ka != kb or ka not in ("num", "str"):
        return None
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _member(v: Any, container: Any) -> _Tri:
    if v is _MISSING or container is _MISSING:
        return None
    kc = _kind(container)
    if kc == "map":
        return v in container if isinstance(v, str) else None
    if kc != "list" or len(container) > MAX_LIST_ITEMS:
        return None
    return any(_eq(v, item) is True for item in container)


def _literal_member(items: tuple[Any, ...]) -> Callable[[Any], _Tri]:
    """Membership in a literal list, bucketed by kind so `True in [1]` stays false and lookups are O(1)."""
    strs = frozenset(x for x in items if isinstance(x, str))
    nums = frozenset(x for x in items if _kind(x) == "num")
    bools = frozenset(x for x in items if isinstance(x, bool))
    nested = tuple(x for x in items if isinstance(x, tuple))
    has_null = any(x is None for x in items)

    def member(v: Any) -> _Tri:
        if v is _MISSING:
            return None
        if isinstance(v, str):
            return v in strs
        if isinstance(v, bool):
            return v in bools
        if isinstance(v, int | float):
            return v in nums
        if v is None:
            return has_null
        return any(_eq(v, x) is True for x in nested)

    return member


# ---------------------------------------------------------------------------------------------- compile


def _compile_bool(node: Node) -> BoolFn:
    if isinstance(node, Status):
        states = _STATUS_STATES[node.name]
        return lambda state, _o: state in states
    if isinstance(node, Not):
        inner = _compile_bool(node.operand)

        def not_(state: str, o: Mapping[str, Any]) -> _Tri:
            v = inner(state, o)
            return None if v is None else not v

        return not_
    if isinstance(node, Bool):
        return _compile_junction(node)
    if isinstance(node, Cmp):
        return _compile_cmp(node)
    if isinstance(node, Call) and node.fn == "exists":
        ref = _compile_value(node.arg)
        return lambda state, o: _not_null(ref(state, o))
    value = _compile_value(node)
    return lambda state, o: _truth(value(state, o))


def _not_null(v: Any) -> bool:
    return v is not _MISSING and v is not None


def _truth(v: Any) -> _Tri:
    return v if isinstance(v, bool) else None


def _compile_junction(node: Bool) -> BoolFn:
    parts = tuple(_compile_bool(item) for item in node.items)
    # Kleene's three-valued logic: the first False decides an AND and the first True an OR; otherwise an
    # unknown part leaves the whole unknown.
    decisive = node.op != "AND"

    def junction(state: str, o: Mapping[str, Any]) -> _Tri:
        result: _Tri = not decisive
        for part in parts:
            v = part(state, o)
            if v is decisive:
                return decisive
            if v is None:
                result = None
        return result

    return junction


def _compile_cmp(node: Cmp) -> BoolFn:
    left = _compile_value(node.left)
    op = node.op
    if op in ("in", "not in"):
        negate = op == "not in"
        if isinstance(node.right, Lit) and isinstance(node.right.value, tuple):
            lit = _literal_member(node.right.value)

            def in_lit(state: str, o: Mapping[str, Any]) -> _Tri:
                v = lit(left(state, o))
                return None if v is None else v != negate

            return in_lit
        right = _compile_value(node.right)

        def in_(state: str, o: Mapping[str, Any]) -> _Tri:
            v = _member(left(state, o), right(state, o))
            return None if v is None else v != negate

        return in_
    right = _compile_value(node.right)
    if op in ("==", "!="):
        negate = op == "!="

        def eq(state: str, o: Mapping[str, Any]) -> _Tri:
            a, b = left(state, o), right(state, o)
            if a is _MISSING or b is _MISSING:
                return None
            v = _eq(a, b)
            return None if v is None else v != negate

        return eq

    def order(state: str, o: Mapping[str, Any]) -> _Tri:
        a, b = left(state, o), right(state, o)
        if a is _MISSING or b is _MISSING:
            return None
        return _order(op, a, b)

    return order


def _compile_value(node: Node) -> _ValFn:
    if isinstance(node, Lit):
        const = list(node.value) if isinstance(node.value, tuple) else node.value
        return lambda _s, _o: const
    if isinstance(node, Ref):
        return _compile_ref(node)
    if isinstance(node, Call) and node.fn == "len":
        arg = _compile_value(node.arg)
        return lambda state, o: _length(arg(state, o))
    as_bool = _compile_bool(node)

    def boolean(state: str, o: Mapping[str, Any]) -> Any:
        v = as_bool(state, o)
        return _MISSING if v is None else v

    return boolean


def _length(v: Any) -> Any:
    return len(v) if isinstance(v, str | list | tuple | Mapping) else _MISSING


def _compile_ref(node: Ref) -> _ValFn:
    name, path = node.name, node.path
    if not path:
        return lambda _s, o: o.get(name, _MISSING)

    def ref(_s: str, o: Mapping[str, Any]) -> Any:
        v = o.get(name, _MISSING)
        for step in path:
            if isinstance(step, str):
                v = v.get(step, _MISSING) if isinstance(v, Mapping) else _MISSING
            elif isinstance(v, list | tuple) and -len(v) <= step < len(v):
                v = v[step]
            else:
                return _MISSING
        return v

    return ref


def compile_condition(node: Node) -> BoolFn:
    """The closure that evaluates a condition's tree (true, false or None: unknown)."""
    return _compile_bool(node)
