"""The static half of `swarm.plugins.safe_eval`: the grammar it accepts and the check that enforces it.

`check` parses an expression and rejects, before anything runs, every construct outside the whitelist
below: unknown node types, names or attributes starting with `_`, attributes that are not one of the
listed methods or are not called, calls to anything but the safe built-ins and those methods, and
dynamic or oversized format specifications. The evaluator re-checks what only the values can tell
(the exact type behind a method call, sizes) while it walks the tree.

Nesting is bounded here, before anything runs: the source may be at most `Limits.max_source` characters
and the tree at most `Limits.max_depth` levels deep (each extra `for` of a comprehension counts as a level,
because the evaluator nests one generator per clause). The depth is measured without recursion, and every
way the parser itself gives up on deep input (RecursionError during AST construction, "too many nested
parentheses", the parser's own stack overflow reported as MemoryError) becomes the same clear
`InvalidPayload`: "expression nested too deeply (limit N)". So a hostile source can never escape `check`
as anything but `InvalidPayload`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from swarm.errors import InvalidPayload

__all__ = ["DEFAULT_LIMITS", "METHODS", "SAFE_BUILTINS", "Limits", "check", "constant_text", "too_deep"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one evaluation; the defaults keep a run around a second and ~100 MB.

    `max_total` is the size budget: the number of elements, characters and 64-bit integer words that the
    evaluation may build or touch in total (see `swarm.plugins.safe_eval`); no single value may hold
    more than that either, counting a shared element once per reference. `max_len` bounds the length of
    any one string or collection, `max_steps` the number of tree nodes visited (loops included).
    """

    max_source: int = 10_000
    max_depth: int = 100
    max_steps: int = 1_000_000
    max_int_bits: int = 100_000
    max_len: int = 1_000_000
    max_total: int = 10_000_000
    max_format_width: int = 1_000
    max_round_digits: int = 400


DEFAULT_LIMITS = Limits()

SAFE_BUILTINS = frozenset({
    "abs", "all", "any", "bool", "dict", "enumerate", "float", "int", "len", "list", "max", "min", "range",
    "reversed", "round", "set", "sorted", "str", "sum", "tuple", "zip",
})  # fmt: skip
_STR_METHODS = frozenset({
    "capitalize", "casefold", "center", "count", "endswith", "find", "index", "isalnum", "isalpha",
    "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "join", "ljust", "lower",
    "lstrip", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust",
    "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title",
    "upper", "zfill",
})  # fmt: skip
_SET_METHODS = frozenset({
    "copy", "difference", "intersection", "isdisjoint", "issubset", "issuperset", "symmetric_difference",
    "union",
})  # fmt: skip
METHODS: dict[type, frozenset[str]] = {
    str: _STR_METHODS,
    list: frozenset({"count", "index", "copy"}),
    tuple: frozenset({"count", "index"}),
    dict: frozenset({"get", "keys", "values", "items", "copy"}),
    set: _SET_METHODS,
    frozenset: _SET_METHODS - {"copy"},
    int: frozenset({"bit_length"}),
    float: frozenset({"is_integer"}),
}
_ALL_METHODS = frozenset().union(*METHODS.values())

_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Store, ast.BinOp, ast.UnaryOp, ast.BoolOp,
    ast.Compare, ast.IfExp, ast.Call, ast.keyword, ast.Attribute, ast.Subscript, ast.Slice, ast.List,
    ast.Tuple, ast.Set, ast.Dict, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
    ast.comprehension, ast.Starred, ast.JoinedStr, ast.FormattedValue,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift,
    ast.BitOr, ast.BitXor, ast.BitAnd, ast.UAdd, ast.USub, ast.Not, ast.Invert, ast.And, ast.Or,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot,
)  # fmt: skip
_CONSTANT_TYPES = (int, float, str, bool, type(None))


def _invalid(node: ast.AST, why: str) -> InvalidPayload:
    """Build the error for a rejected construct, with its position so the submitter can find it."""
    where = f" at column {node.col_offset + 1}" if hasattr(node, "col_offset") else ""
    return InvalidPayload(f"expression: {why}{where}")


def constant_text(node: ast.AST) -> str:
    """The text of a constant string part or of a constant format specification (checked by `check`)."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(constant_text(v) for v in node.values)
    raise InvalidPayload("expression: format specifications must be constant")


def too_deep(limits: Limits) -> str:
    """The one wording for every nesting failure, at check time or at run time."""
    return f"expression nested too deeply (limit {limits.max_depth})"


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _depth(tree: ast.AST, limit: int) -> int:
    """Nesting depth of the tree as the evaluator will recurse through it, or the first depth over `limit`.

    Iterative on purpose: the tree may be far deeper than the interpreter's stack allows. A comprehension
    nests one generator per `for` clause, so its element sits below all of them.
    """
    deepest = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        if isinstance(node, _COMPREHENSIONS):
            below = depth + len(node.generators)
            stack.extend((gen, depth + i) for i, gen in enumerate(node.generators, 1))
            parts = (node.key, node.value) if isinstance(node, ast.DictComp) else (node.elt,)
            stack.extend((part, below + 1) for part in parts)
        else:
            stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _target_names(target: ast.AST) -> Iterator[str]:
    """The names a comprehension target binds; only plain names and (nested) tuples of them are allowed."""
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, ast.Tuple | ast.List):
        for elt in target.elts:
            yield from _target_names(elt)
    else:
        raise _invalid(target, "comprehension targets must be names or tuples of names")


def _check_node(node: ast.AST, known: frozenset[str], call_funcs: set[int], limits: Limits) -> None:
    """Apply the per-node rules of the module docstring to one node."""
    if not isinstance(node, _ALLOWED_NODES):
        raise _invalid(node, f"{type(node).__name__} is not allowed")
    if isinstance(node, ast.Constant) and not isinstance(node.value, _CONSTANT_TYPES):
        raise _invalid(node, f"constants of type {type(node.value).__name__} are not allowed")
    if isinstance(node, ast.Name):
        if node.id.startswith("_"):
            raise _invalid(node, f"name {node.id!r} is not allowed (leading underscore)")
        if isinstance(node.ctx, ast.Load) and node.id not in known:
            raise _invalid(node, f"name {node.id!r} is not defined")
    elif isinstance(node, ast.Attribute):
        if node.attr.startswith("_") or node.attr not in _ALL_METHODS:
            raise _invalid(node, f"attribute {node.attr!r} is not allowed")
        if id(node) not in call_funcs:
            raise _invalid(node, "attributes may only be used as method calls")
    elif isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id not in SAFE_BUILTINS:
            raise _invalid(node, f"{node.func.id!r} is not a callable built-in")
        if not isinstance(node.func, ast.Name | ast.Attribute):
            raise _invalid(node, "only built-ins and methods can be called")
        for kw in node.keywords:
            if kw.arg is None or kw.arg.startswith("_"):
                raise _invalid(node, "keyword arguments must be plain names")
    elif isinstance(node, ast.comprehension) and node.is_async:
        raise _invalid(node, "async comprehensions are not allowed")
    elif isinstance(node, ast.FormattedValue) and node.format_spec is not None:
        spec = node.format_spec
        if not (isinstance(spec, ast.JoinedStr) and all(isinstance(v, ast.Constant) for v in spec.values)):
            raise _invalid(node, "format specifications must be constant")
        widest = len(str(limits.max_format_width))
        # Compare lengths first: int() of thousands of digits is slow, or refused outright by Python.
        if any(
            len(d) > widest or int(d) > limits.max_format_width
            for d in re.findall(r"\d+", constant_text(spec))
        ):
            raise _invalid(node, f"format widths above {limits.max_format_width} are not allowed")


def check(expression: str, names: Iterable[str] = (), limits: Limits = DEFAULT_LIMITS) -> ast.Expression:
    """Parse and vet `expression` without running it; `names` are the variables it may use."""
    if not isinstance(expression, str):
        raise InvalidPayload("expression must be a string")
    if len(expression) > limits.max_source:
        raise InvalidPayload(f"expression is longer than {limits.max_source} characters")
    try:
        tree = _parse(expression, limits)
        if _depth(tree, limits.max_depth) > limits.max_depth:
            raise InvalidPayload(too_deep(limits))
        return _vet(tree, names, limits)
    except RecursionError:  # only if the caller left almost no stack: all of the above is iterative
        failure = too_deep(limits)
    except MemoryError:
        failure = "out of memory while checking the expression"
    # Raised outside the handler so that the failed frames, and what they hold, are released first.
    raise InvalidPayload(failure)


def _parse(expression: str, limits: Limits) -> ast.Expression:
    """`ast.parse`, with every way it fails on deep input turned into the one nesting error."""
    failure: str
    try:
        return ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        nested = "nested parentheses" in str(exc) or "too complex" in str(exc)
        failure = too_deep(limits) if nested else f"expression is not valid Python: {exc}"
    except (RecursionError, MemoryError):
        # RecursionError comes from AST construction; in CPython 3.11 the parser reports its own stack
        # overflow as a MemoryError. Within `max_source` characters, depth is what causes either.
        failure = too_deep(limits)
    except ValueError as exc:  # null bytes, unencodable characters
        failure = f"expression is not valid Python: {exc}"
    raise InvalidPayload(failure)


def _vet(tree: ast.Expression, names: Iterable[str], limits: Limits) -> ast.Expression:
    """Apply the per-node rules to a tree already known to be shallow enough."""
    bound: set[str] = set()
    call_funcs: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.comprehension):
            bound.update(_target_names(node.target))
        elif isinstance(node, ast.Call):
            call_funcs.add(id(node.func))
    known = frozenset(names) | SAFE_BUILTINS | bound
    for node in ast.walk(tree):
        _check_node(node, known, call_funcs, limits)
    return tree
