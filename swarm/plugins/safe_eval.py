"""A restricted expression evaluator for the `python_eval` task.

Theory of operation
-------------------
Anyone who can submit a task to the swarm can submit an expression, so the evaluator must be safe to run on
somebody's phone. It never calls `eval`/`compile`: `check` (in `safe_eval_grammar`, with the whitelists)
parses the source with `ast` and rejects every construct outside a small grammar, and `evaluate` walks the
checked tree itself. Walking the tree ourselves is
what makes the rules enforceable at each step rather than hoped for:

* Names starting with `_` are rejected everywhere, and so is any attribute that is not one of a few
  side-effect-free methods of the *exact* built-in type of the object (`str.upper`, `dict.get`, ...).
  Attribute syntax is only accepted as a method call, so there is no path to `__class__`, `__globals__`
  or a function object's internals. `str.format` is deliberately absent: its `{0.__class__}` fields would
  reopen attribute access. Mutating methods (`list.append`, ...) are absent too: with them a comprehension
  can grow a list without bound.
* Calls go only to the safe built-ins (`len`, `sorted`, `range`, ...) or to whitelisted methods;
  variables are data and are never callable.
* Nothing may make memory or CPU explode: every operation that can allocate checks its result size *before*
  allocating where the size is predictable (`**`, `<<`, sequence repetition, `str.join`, `str.replace`,
  padding, `str()` of a container) and after otherwise; a cumulative allocation budget and a step budget
  bound what loops in comprehensions can do in total.

The worker process's memory limit and the task timeout remain the last line of defence; these checks are
what make that line rarely needed. Runtime failures raise `EvalError`; a malformed or forbidden expression
raises `InvalidPayload` from `check`, before anything runs.
"""

from __future__ import annotations

import ast
import math
import operator
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from swarm.errors import InvalidPayload
from swarm.plugins.safe_eval_grammar import (
    DEFAULT_LIMITS,
    METHODS,
    SAFE_BUILTINS,
    Limits,
    check,
    constant_text,
)

__all__ = ["SAFE_BUILTINS", "EvalError", "Limits", "check", "evaluate"]


class EvalError(Exception):
    """Evaluation failed at run time (a limit was hit, or a plain error such as division by zero)."""


_SIZED = (str, list, tuple, dict, set, frozenset)
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}  # fmt: skip
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.LShift: operator.lshift, ast.RShift: operator.rshift, ast.BitOr: operator.or_,
    ast.BitXor: operator.xor, ast.BitAnd: operator.and_,
}  # fmt: skip
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_, ast.Invert: operator.invert,
}  # fmt: skip


def evaluate(
    expression: str, variables: Mapping[str, Any] | None = None, limits: Limits = DEFAULT_LIMITS
) -> Any:
    """Check then evaluate `expression` with `variables` (plain data); raise `EvalError` if it fails."""
    variables = dict(variables or {})
    for name in variables:
        if not isinstance(name, str) or name.startswith("_"):
            raise InvalidPayload(f"variable name {name!r} is not allowed")
    tree = check(expression, variables, limits)
    evaluator = _Evaluator(variables, limits)
    try:
        return evaluator.eval(tree.body, evaluator.scope)
    except EvalError:
        raise
    except Exception as exc:  # ZeroDivisionError, TypeError, RecursionError ... are the expression's fault
        raise EvalError(f"{type(exc).__name__}: {exc}") from None


class _Evaluator:
    """Walks a checked tree; every allocation goes through `_account` and every node through `_step`."""

    def __init__(self, variables: dict[str, Any], limits: Limits) -> None:
        self.limits = limits
        self.steps = 0
        self.total = 0
        self.scope: ChainMap[str, Any] = ChainMap(variables)
        plain = (abs, all, any, bool, dict, enumerate, float, len, list, max, min, reversed, set, sorted,
                 tuple, zip)  # fmt: skip
        guarded = {"int": self._int, "range": self._range, "round": self._round, "str": self._str,
                   "sum": self._sum}  # fmt: skip
        self.builtins: dict[str, Any] = {f.__name__: f for f in plain} | guarded

    # -- budgets -----------------------------------------------------------------------------------------
    def _fail(self, why: str) -> EvalError:
        return EvalError(f"limit exceeded: {why}")

    def _step(self) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise self._fail(f"more than {self.limits.max_steps} evaluation steps")

    def _account(self, value: Any) -> Any:
        """Check one freshly made value against the size limits and charge it to the allocation budget."""
        if type(value) is int:
            bits = value.bit_length()
            if bits > self.limits.max_int_bits:
                raise self._fail(f"integer larger than {self.limits.max_int_bits} bits")
            units = bits // 64
        elif isinstance(value, _SIZED):
            units = len(value)
            if units > self.limits.max_len:
                raise self._fail(f"{type(value).__name__} longer than {self.limits.max_len}")
        else:
            return value
        self.total += units
        if self.total > self.limits.max_total:
            raise self._fail(f"more than {self.limits.max_total} units allocated in total")
        return value

    def _need(self, size: int, what: str) -> None:
        """Refuse an allocation whose size is known before it is made."""
        if size > self.limits.max_len:
            raise self._fail(f"{what} would be longer than {self.limits.max_len}")

    def _measure(self, value: Any, budget: int) -> int:
        """Rough printed size of `value`, stopping early once it exceeds `budget`; guards `str()`."""
        if isinstance(value, str):
            return len(value)
        if isinstance(value, int):
            return value.bit_length() // 3 + 2
        if isinstance(value, dict):
            value = [*value.keys(), *value.values()]
        if isinstance(value, list | tuple | set | frozenset):
            size = 2
            for item in value:
                size += self._measure(item, budget - size) + 2
                if size > budget:
                    break
            return size
        return 32

    # -- guarded built-ins ---------------------------------------------------------------------------------
    def _int(self, *args: Any) -> int:
        if args and isinstance(args[0], str) and len(args[0]) > 5_000:
            raise self._fail("int() of a string longer than 5000 characters")
        return int(*args)

    def _range(self, *args: Any) -> range:
        r = range(*args)
        self._need(len(r), "range")
        return r

    def _round(self, number: Any, ndigits: Any = None) -> Any:
        if isinstance(ndigits, int) and abs(ndigits) > self.limits.max_round_digits:
            raise self._fail(f"round() to more than {self.limits.max_round_digits} digits")
        return round(number, ndigits)

    def _str(self, value: Any = "") -> str:
        self._need(self._measure(value, self.limits.max_len), "str()")
        return str(value)

    def _sum(self, iterable: Iterable[Any], start: Any = 0) -> Any:
        if type(start) not in (int, float, bool):
            raise EvalError("sum() only adds numbers")
        return sum(iterable, start)

    def _method(self, obj: Any, name: str) -> Callable[..., Any]:
        """Resolve a whitelisted method of the exact built-in type of `obj`, guarded where it can allocate."""
        if name not in METHODS.get(type(obj), frozenset()):
            raise EvalError(f"{type(obj).__name__} has no allowed method {name!r}")
        method: Callable[..., Any] = getattr(obj, name)
        if type(obj) is not str:
            return method
        if name == "join":
            return lambda items: self._join(obj, items)
        if name == "replace":
            return lambda old, new, count=-1: self._replace(obj, old, new, count)
        if name in ("center", "ljust", "rjust", "zfill"):
            return lambda width, *fill: self._pad(method, width, *fill)
        return method

    def _pad(self, method: Callable[..., str], width: int, *fill: str) -> str:
        self._need(width, "padding")
        return method(width, *fill)

    def _join(self, sep: str, items: Iterable[Any]) -> str:
        parts = list(items)
        self._need(len(parts), "str.join input")
        self._need(
            sum(len(p) if isinstance(p, str) else 0 for p in parts) + len(sep) * len(parts), "str.join"
        )
        return sep.join(parts)

    def _replace(self, s: str, old: str, new: str, count: int = -1) -> str:
        n = len(s) + 1 if old == "" else s.count(old)
        n = n if count < 0 else min(n, count)
        self._need(len(s) + n * (len(new) - len(old)), "str.replace")
        return s.replace(old, new, count)

    # -- operators -------------------------------------------------------------------------------------------
    def _binop(self, op: ast.operator, a: Any, b: Any) -> Any:
        """Apply a binary operator after the size checks that must happen before allocating."""
        if isinstance(op, ast.Mult):
            for seq, n in ((a, b), (b, a)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    self._need(len(seq) * max(n, 0), "repetition")
        elif isinstance(op, ast.Pow) and isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
            if math.log2(abs(a)) * b > self.limits.max_int_bits:
                raise self._fail(f"power larger than {self.limits.max_int_bits} bits")
        elif isinstance(op, ast.LShift) and isinstance(a, int) and isinstance(b, int):
            if b > self.limits.max_int_bits or a.bit_length() + b > self.limits.max_int_bits:
                raise self._fail(f"shift larger than {self.limits.max_int_bits} bits")
        elif isinstance(op, ast.Mod) and isinstance(a, str):
            raise EvalError("%-formatting of strings is not supported; use an f-string")
        return self._account(_BINARY[type(op)](a, b))

    # -- the walk -----------------------------------------------------------------------------------------
    def eval(self, node: ast.AST, scope: ChainMap[str, Any]) -> Any:
        """Evaluate one node; dispatch by node type to the `_ev_<Type>` methods."""
        self._step()
        method = getattr(self, f"_ev_{type(node).__name__}", None)
        if method is None:  # the checker makes this unreachable; keep the walk closed anyway
            raise EvalError(f"{type(node).__name__} is not allowed")
        return method(node, scope)

    def _ev_Constant(self, node: ast.Constant, scope: ChainMap[str, Any]) -> Any:
        return node.value

    def _ev_Name(self, node: ast.Name, scope: ChainMap[str, Any]) -> Any:
        if node.id in scope:
            return scope[node.id]
        if node.id in self.builtins:
            return self.builtins[node.id]
        raise EvalError(f"name {node.id!r} is not defined")

    def _ev_BinOp(self, node: ast.BinOp, scope: ChainMap[str, Any]) -> Any:
        return self._binop(node.op, self.eval(node.left, scope), self.eval(node.right, scope))

    def _ev_UnaryOp(self, node: ast.UnaryOp, scope: ChainMap[str, Any]) -> Any:
        return self._account(_UNARY[type(node.op)](self.eval(node.operand, scope)))

    def _ev_BoolOp(self, node: ast.BoolOp, scope: ChainMap[str, Any]) -> Any:
        value: Any = None
        for operand in node.values:
            value = self.eval(operand, scope)
            if bool(value) is isinstance(node.op, ast.Or):
                return value
        return value

    def _ev_Compare(self, node: ast.Compare, scope: ChainMap[str, Any]) -> Any:
        left = self.eval(node.left, scope)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.eval(comparator, scope)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True

    def _ev_IfExp(self, node: ast.IfExp, scope: ChainMap[str, Any]) -> Any:
        return self.eval(node.body if self.eval(node.test, scope) else node.orelse, scope)

    def _ev_Call(self, node: ast.Call, scope: ChainMap[str, Any]) -> Any:
        if isinstance(node.func, ast.Attribute):
            func = self._method(self.eval(node.func.value, scope), node.func.attr)
        elif isinstance(node.func, ast.Name) and node.func.id in self.builtins:
            func = self.builtins[node.func.id]
        else:
            raise EvalError("only built-ins and methods can be called")
        args = self._elements(node.args, scope)
        kwargs = {kw.arg: self.eval(kw.value, scope) for kw in node.keywords if kw.arg}
        return self._account(func(*args, **kwargs))

    def _ev_Subscript(self, node: ast.Subscript, scope: ChainMap[str, Any]) -> Any:
        return self._account(self.eval(node.value, scope)[self.eval(node.slice, scope)])

    def _ev_Slice(self, node: ast.Slice, scope: ChainMap[str, Any]) -> slice:
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if p is None else self.eval(p, scope) for p in parts))

    def _elements(self, nodes: list[ast.expr], scope: ChainMap[str, Any]) -> list[Any]:
        """Evaluate display or argument elements, expanding `*iterable` within the size limit."""
        out: list[Any] = []
        for elt in nodes:
            if isinstance(elt, ast.Starred):
                out.extend(self.eval(elt.value, scope))
            else:
                out.append(self.eval(elt, scope))
            self._need(len(out), "display")
        return out

    def _ev_List(self, node: ast.List, scope: ChainMap[str, Any]) -> Any:
        return self._account(self._elements(node.elts, scope))

    def _ev_Tuple(self, node: ast.Tuple, scope: ChainMap[str, Any]) -> Any:
        return self._account(tuple(self._elements(node.elts, scope)))

    def _ev_Set(self, node: ast.Set, scope: ChainMap[str, Any]) -> Any:
        return self._account(set(self._elements(node.elts, scope)))

    def _ev_Dict(self, node: ast.Dict, scope: ChainMap[str, Any]) -> Any:
        out: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                out.update(self.eval(value, scope))
            else:
                out[self.eval(key, scope)] = self.eval(value, scope)
        return self._account(out)

    def _ev_JoinedStr(self, node: ast.JoinedStr, scope: ChainMap[str, Any]) -> Any:
        parts = [
            self.eval(v, scope) if isinstance(v, ast.FormattedValue) else constant_text(v)
            for v in node.values
        ]
        return self._account("".join(parts))

    def _ev_FormattedValue(self, node: ast.FormattedValue, scope: ChainMap[str, Any]) -> str:
        value = self.eval(node.value, scope)
        self._need(self._measure(value, self.limits.max_len), "formatted value")
        if node.conversion in (ord("r"), ord("a")):
            value = repr(value) if node.conversion == ord("r") else ascii(value)
        return format(value, "" if node.format_spec is None else constant_text(node.format_spec))

    # -- comprehensions -------------------------------------------------------------------------------------
    def _bind(self, target: ast.AST, value: Any, names: MutableMapping[str, Any]) -> None:
        if isinstance(target, ast.Name):
            names[target.id] = value
            return
        assert isinstance(target, ast.Tuple | ast.List)  # guaranteed by check()
        items = list(value)
        if len(items) != len(target.elts):
            raise EvalError(f"cannot unpack {len(items)} values into {len(target.elts)} names")
        for elt, item in zip(target.elts, items, strict=True):
            self._bind(elt, item, names)

    def _scopes(
        self, gens: list[ast.comprehension], scope: ChainMap[str, Any]
    ) -> Iterator[ChainMap[str, Any]]:
        """Yield one scope per combination of the comprehension's `for` clauses that passes its `if`s."""
        if not gens:
            yield scope
            return
        first, rest = gens[0], gens[1:]
        inner = scope.new_child()
        for item in self.eval(first.iter, scope):
            self._step()
            self._bind(first.target, item, inner.maps[0])
            if all(self.eval(cond, inner) for cond in first.ifs):
                yield from self._scopes(rest, inner)

    def _ev_ListComp(self, node: ast.ListComp, scope: ChainMap[str, Any]) -> Any:
        out = []
        for inner in self._scopes(node.generators, scope):
            out.append(self.eval(node.elt, inner))
            self._need(len(out), "list comprehension")
        return self._account(out)

    def _ev_SetComp(self, node: ast.SetComp, scope: ChainMap[str, Any]) -> Any:
        out = set()
        for inner in self._scopes(node.generators, scope):
            out.add(self.eval(node.elt, inner))
            self._need(len(out), "set comprehension")
        return self._account(out)

    def _ev_DictComp(self, node: ast.DictComp, scope: ChainMap[str, Any]) -> Any:
        out = {}
        for inner in self._scopes(node.generators, scope):
            out[self.eval(node.key, inner)] = self.eval(node.value, inner)
            self._need(len(out), "dict comprehension")
        return self._account(out)

    def _ev_GeneratorExp(self, node: ast.GeneratorExp, scope: ChainMap[str, Any]) -> Iterator[Any]:
        return (self.eval(node.elt, inner) for inner in self._scopes(node.generators, scope))
