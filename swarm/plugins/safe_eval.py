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
  can grow a list without bound, and without them a value never changes once it is made.
* Calls go only to the safe built-ins (`len`, `sorted`, `range`, ...) or to whitelisted methods;
  variables are data and are never callable.
* Nothing may make memory or CPU explode. Cost is charged by *size*, not per node: see below.

Sizes and the budget
--------------------
The *size* of a value is what serialising, sorting or comparing it would touch: 1 per element, plus the
characters of a string and the 64-bit words of an integer, counting a shared element once per reference.
So `[[0] * 10**6] * 10**6` is 10^12 elements, although it holds only two lists. Sizes are computed without
recursion and remembered per container (values never change once made), so asking again costs nothing.

* Building: no value may be larger than the budget (`Limits.max_total`, 10^7 by default). Repetition and
  concatenation know the size of their result in advance and are refused *before* doing any work,
  with "the expression would build N elements, over the limit of M". No string or collection may be
  longer than `Limits.max_len` (10^6), no integer wider than `Limits.max_int_bits` (100 000 bits).
* Touching: every operation charges the budget, in total, with what it builds and what it reads:
  `sorted` its input's size times log2 of its length, `min`/`max`/`sum`/`set`/`dict` its input's size,
  `list`/`tuple`/`all`/`any` its length, `str()`/f-strings the size of the value and of the text,
  `==`/`<` the smaller side, `in` the container (a list) or the needle (a set or dict), string methods their
  string, set algebra both sides, big-integer arithmetic its words (multiplication, division and powers
  the product of the word counts / 16), and a slice or a new string its length. Collections are charged
  up front; lazy iterables (generators, `zip`, ...) item by item as a built-in consumes them, so the
  refusal comes before the work: "the expression would touch N elements, over the limit of M".
* Steps: at most `Limits.max_steps` (10^6) tree nodes and loop iterations, which bounds the time spent
  in the interpreter itself.

The worker process's memory limit and the task timeout remain the last line of defence; these checks are
what make that line rarely needed. Runtime failures raise `EvalError` (a `RecursionError` becomes
"expression nested too deeply (limit N)", a `MemoryError` "out of memory"); a malformed or forbidden
expression raises `InvalidPayload` from `check`, before anything runs.
"""

from __future__ import annotations

import ast
import math
import operator
import reprlib
import sys
from collections import ChainMap
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, MutableMapping
from itertools import chain
from typing import Any

from swarm.errors import InvalidPayload
from swarm.plugins.safe_eval_grammar import (
    DEFAULT_LIMITS,
    METHODS,
    SAFE_BUILTINS,
    Limits,
    check,
    constant_text,
    too_deep,
)

__all__ = ["SAFE_BUILTINS", "EvalError", "Limits", "check", "evaluate"]


class EvalError(Exception):
    """Evaluation failed at run time (a limit was hit, or a plain error such as division by zero)."""


_KEYS: type[Any] = type({}.keys())
_VALUES: type[Any] = type({}.values())
_ITEMS: type[Any] = type({}.items())
_WALKED = (list, tuple, set, frozenset, dict, _KEYS, _VALUES, _ITEMS)  # sized by their parts
_COLLECTIONS = (str, bytes, range, *_WALKED)  # sized and re-iterable: charged up front
_SCALARS = frozenset({int, float, bool, type(None), str, bytes})
_MEMO_MIN = 32  # containers smaller than this are cheaper to recount than to remember
_MEMO_FLOOR = 1 << 20  # references the memos may hold before they look for values only they keep alive
_ENTRY = 16  # what one memo entry costs, in references
_DICTS_REMEMBERED = 64
_STR, _REPR, _ASCII = ord("s"), ord("r"), ord("a")

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
    """Check then evaluate `expression` with `variables` (plain data); raise `EvalError` if it fails.

    A lazy result (a generator, `zip`, ...) keeps charging the same budget while it is consumed, and fails
    with `EvalError` too.
    """
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
        error = _runtime_error(exc, limits)
    # Raised outside the handler, so the failed frames (and whatever huge values they hold) are freed now.
    raise error


def _runtime_error(exc: Exception, limits: Limits) -> EvalError:
    """The `EvalError` for an exception raised while evaluating; never builds a huge message."""
    if isinstance(exc, RecursionError):
        return EvalError(too_deep(limits))
    if isinstance(exc, MemoryError):
        return EvalError("out of memory")
    if isinstance(exc, KeyError):  # str() of a KeyError is the repr of the key, which may be enormous
        return EvalError(f"KeyError: {_brief(exc.args[0]) if exc.args else ''}")
    return EvalError(f"{type(exc).__name__}: {str(exc)[:500]}")


def _brief(value: Any) -> str:
    brief = reprlib.Repr()
    brief.maxstring = brief.maxother = 80
    try:
        return brief.repr(value)
    except ValueError:  # an integer too long for Python to print
        return f"<{type(value).__name__}>"


# -- sizes ---------------------------------------------------------------------------------------------------
def _tree_leaf(value: Any) -> int | None:
    """Size of a value that is not walked (None for collections, which are the sum of their parts)."""
    kind = type(value)
    if kind is int:
        bits: int = value.bit_length()
        return 1 + (bits >> 6)
    if kind is str or kind is bytes:
        return 1 + len(value)
    if kind is range:  # as the list it would become
        widest: int = max(abs(value.start), abs(value.stop)).bit_length()
        return 1 + len(value) * (1 + (widest >> 6))
    if isinstance(value, _WALKED):
        return None
    return 1  # float, None, an iterator, a built-in: what an iterator yields is charged as it is consumed


def _tree_flat(items: Collection[Any]) -> int | None:
    """Total size of a collection's scalar items at C speed, or None if some item is a collection."""
    if len(items) <= 8:  # a small tuple: a plain loop beats setting up the C-speed passes
        total = 0
        for item in items:
            size = _tree_leaf(item) if type(item) in _SCALARS else None
            if size is None:
                return None
            total += size
        return total
    types = set(map(type, items))
    if not types <= _SCALARS:
        return None
    total = len(items)
    if str in types or bytes in types:
        if len(types) == 1:
            total += sum(map(len, items))
        else:
            total += sum(len(x) for x in items if type(x) is str or type(x) is bytes)
    if int in types:
        ints = items if len(types) == 1 else [x for x in items if type(x) is int]
        if ints and max(map(int.bit_length, ints)) >= 64:  # only then does any integer take extra words
            total += sum(x.bit_length() >> 6 for x in ints)
    return total


def _tree_own(container: Any) -> int:
    return 1 + len(container) if type(container) is _ITEMS else 1


def _digits(bits: int) -> int:
    """At most how many characters an integer of `bits` bits prints as (sign included)."""
    return bits * 30103 // 100000 + 2


def _repr_len(text: str) -> int:
    if text.isprintable():
        return len(text) + 2 + text.count("\\") + text.count("'")
    return (4 if text.isascii() else 10) * len(text) + 2


def _printed_leaf(value: Any) -> int | None:
    """At most how long `repr(value)` is, for a value that is not walked."""
    kind = type(value)
    if kind is str:
        return _repr_len(value)
    if kind is int:
        return _digits(value.bit_length())
    if kind is bytes:
        return 4 * len(value) + 3
    if kind is range:
        ends = (value.start, value.stop, value.step)
        return 16 + 3 * _digits(max(end.bit_length() for end in ends))
    if isinstance(value, _WALKED):
        return None
    if kind is float:
        return 24
    return 5 if kind is bool or value is None else 128  # a bound built-in or an iterator prints long


def _printed_flat(items: Collection[Any]) -> int | None:
    types = set(map(type, items))
    if not types <= _SCALARS:
        return None
    if types == {int}:
        return sum(map(int.bit_length, items)) * 30103 // 100000 + 2 * len(items)
    if types == {str} and all(map(str.isprintable, items)):
        escapes: int = sum(map(operator.methodcaller("count", "\\"), items))
        quotes: int = sum(map(operator.methodcaller("count", "'"), items))
        return sum(map(len, items)) + 2 * len(items) + escapes + quotes
    return sum(_printed_leaf(x) or 0 for x in items)


def _printed_own(container: Any) -> int:
    # Brackets or a type name, then ", " between items, plus ": " per dict entry or "(, )" per pair.
    per_item = 6 if isinstance(container, _ITEMS) else 4 if isinstance(container, dict) else 2
    return 16 + per_item * len(container)


def _children(container: Any) -> Iterable[Any]:
    if isinstance(container, dict):
        return chain(container.keys(), container.values())
    if isinstance(container, _ITEMS):
        return chain(container.mapping.keys(), container.mapping.values())
    return container  # type: ignore[no-any-return]


def _flat_parts(container: Any, flat: Callable[[Collection[Any]], int | None]) -> int | None:
    if isinstance(container, dict | _ITEMS):
        mapping = container.mapping if isinstance(container, _ITEMS) else container
        keys = flat(mapping.keys())
        values = flat(mapping.values()) if keys is not None else None
        return None if keys is None or values is None else keys + values
    return flat(container)


class _Measure:
    """One way of sizing values (tree size or printed length), remembered for containers.

    Remembering is safe because values never change; an entry holds its value so that its `id` cannot be
    reused. So that the memo does not keep dead values alive (a slice made in a loop, say), the references
    it holds are counted, and whenever they double the entries nothing else holds are dropped.
    """

    def __init__(
        self,
        leaf: Callable[[Any], int | None],
        flat: Callable[[Collection[Any]], int | None],
        own: Callable[[Any], int],
    ) -> None:
        self.leaf, self.flat, self.own = leaf, flat, own
        self.memo: dict[int, tuple[Any, int]] = {}
        self.held = 0
        self.high = _MEMO_FLOOR
        self.last: tuple[Any, int] = (None, 1)  # the last small container sized: often asked again at once

    def of(self, value: Any, limit: int) -> int:
        """The size of `value`, or some number over `limit` once the walk passes it."""
        size = self.leaf(value)
        if size is not None and type(value) in _SCALARS:
            return size
        known = self.memo.get(id(value))  # a container, or an iterator noted with a bound
        if known is not None:
            return known[1]
        if size is not None:
            return size
        if value is self.last[0]:
            return self.last[1]
        if len(value) <= 8:  # a small display or tuple: its parts are leaves or already known
            quick = self._quick(value)
            if quick is not None:
                self._record(value, quick, {})
                if quick < _MEMO_MIN:
                    self.last = (value, quick)
                return quick
        small: dict[int, int] = {}  # sizes of small containers met in this walk, counted once each
        top = self._enter(value)
        if isinstance(top, int):
            self._record(value, top, small)
            if top < _MEMO_MIN:
                self.last = (value, top)
            return top
        stack = [top]
        spent: int = top[2]
        while stack:  # an explicit stack: data may be nested far deeper than the interpreter's stack
            frame = stack[-1]
            node, children = frame[0], frame[1]
            total: int = frame[2]
            for child in children:
                size = self.leaf(child)
                if size is None:
                    size = small.get(id(child))
                if size is None:
                    hit = self.memo.get(id(child))
                    entered = hit[1] if hit is not None else self._enter(child)
                    if isinstance(entered, list):
                        frame[2] = total
                        stack.append(entered)
                        spent += entered[2]
                        break
                    size = entered
                    if hit is None:
                        self._record(child, size, small)
                total += size
                spent += size
                if spent > limit:
                    return spent
            else:
                stack.pop()
                self._record(node, total, small)
                if not stack:
                    return total
                stack[-1][2] += total
        raise AssertionError("unreachable")

    def _quick(self, node: Any) -> int | None:
        total = self.own(node)
        for child in _children(node):
            size = self.leaf(child)
            if size is None:
                hit = self.memo.get(id(child))
                if hit is None:
                    return None
                size = hit[1]
            total += size
        return total

    def _enter(self, node: Any) -> int | list[Any]:
        parts = _flat_parts(node, self.flat)
        if parts is not None:
            return self.own(node) + parts
        return [node, iter(_children(node)), self.own(node)]

    def _record(self, node: Any, size: int, small: dict[int, int]) -> None:
        if size >= _MEMO_MIN:
            self.remember(node, size)
        else:
            small[id(node)] = size

    def remember(self, value: Any, size: int) -> None:
        """Note the size of `value` (or an upper bound on it), so that it is never walked again."""
        self.memo[id(value)] = (value, size)
        self.held += _held(value)
        if self.held > self.high:
            # CPython reference counts: the entry and getrefcount's own argument make 2, so anything
            # at 2 is held by nothing but the memo and need not be kept alive any longer.
            self.memo = {k: e for k, e in self.memo.items() if sys.getrefcount(e[0]) > 2}
            self.held = sum(_held(entry[0]) for entry in self.memo.values())
            self.high = max(_MEMO_FLOOR, 2 * self.held)


def _held(value: Any) -> int:
    return _ENTRY + (len(value) if isinstance(value, _WALKED) else 0)


class _Evaluator:
    """Walks a checked tree; every node goes through `_step` and every cost through `_charge`."""

    def __init__(self, variables: dict[str, Any], limits: Limits) -> None:
        self.limits = limits
        self.steps = 0
        self.total = 0
        self.scope: ChainMap[str, Any] = ChainMap(variables)
        self._tree = _Measure(_tree_leaf, _tree_flat, _tree_own)
        self._printed = _Measure(_printed_leaf, _printed_flat, _printed_own)
        self._dicts: dict[int, tuple[dict[Any, Any], int, int]] = {}  # sizes of keys and values, recent dicts
        guarded: dict[str, Callable[..., Any]] = {
            "all": self._all, "any": self._any, "dict": self._dict, "enumerate": self._enumerate,
            "float": self._float, "int": self._int, "list": self._list, "max": self._max, "min": self._min,
            "range": self._range, "reversed": self._reversed, "round": self._round, "set": self._set,
            "sorted": self._sorted, "str": self._str, "sum": self._sum, "tuple": self._tuple,
            "zip": self._zip,
        }  # fmt: skip
        self.builtins: dict[str, Any] = {"abs": abs, "bool": bool, "len": len} | guarded

    # -- budgets -----------------------------------------------------------------------------------------
    def _fail(self, why: str) -> EvalError:
        return EvalError(f"limit exceeded: {why}")

    def _step(self) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise self._fail(f"more than {self.limits.max_steps} evaluation steps")

    def _charge(self, units: int) -> None:
        """Charge work about to be done (elements, characters, words built or touched) to the budget."""
        self.total += units
        if self.total > self.limits.max_total:
            raise EvalError(
                f"the expression would touch {self.total} elements, over the limit of {self.limits.max_total}"
            )

    def _built(self, size: int) -> None:
        """Refuse a value larger than the budget: serialising or sorting it would touch all of it."""
        if size > self.limits.max_total:
            raise EvalError(
                f"the expression would build {size} elements, over the limit of {self.limits.max_total}"
            )

    def _need(self, size: int, what: str) -> None:
        """Refuse an allocation whose length is known before it is made."""
        if size > self.limits.max_len:
            raise self._fail(f"{what} would be longer than {self.limits.max_len}")

    def _size(self, value: Any) -> int:
        kind = type(value)
        if kind is int:  # the common cases first, without the walker's calls
            bits: int = value.bit_length()
            return 1 + (bits >> 6)
        if kind is str:
            return 1 + len(value)
        if kind is float or kind is bool or value is None:
            return 1
        return self._tree.of(value, self.limits.max_total)

    def _account(self, value: Any, size: int | None = None) -> Any:
        """Charge a value just made; refuse it if too long, too wide or too big (`size`, if known)."""
        kind = type(value)
        if kind is int:
            bits = value.bit_length()
            if bits > 63:
                if bits > self.limits.max_int_bits:
                    raise self._fail(f"integer larger than {self.limits.max_int_bits} bits")
                self._charge(bits >> 6)
        elif kind is str or kind is bytes or isinstance(value, list | tuple | set | frozenset | dict):
            if len(value) > self.limits.max_len:
                raise self._fail(f"{kind.__name__} longer than {self.limits.max_len}")
            self._charge(len(value))
            if kind is not str and kind is not bytes:
                if size is None:
                    size = self._size(value)
                else:
                    self._tree.remember(value, size)
                self._built(size)
        return value

    def _consume(self, items: Any, deep: bool) -> Any:
        """Charge what a built-in will touch in `items`: each item's size if `deep`, else 1 per item.

        A collection, or an iterator whose bound is known, is charged up front; anything else lazily, as
        each item is handed to the built-in, so the refusal comes before the work.
        """
        if isinstance(items, _COLLECTIONS):
            self._charge(self._size(items) if deep else len(items))
            return items
        bound = self._tree.memo.get(id(items))
        if bound is not None:
            self._charge(bound[1])
            return items
        return self._feed(items, self._size if deep else _one)

    def _feed(self, items: Iterable[Any], cost: Callable[[Any], int]) -> Iterator[Any]:
        for count, item in enumerate(items, 1):
            self._need(count, "input")
            self._charge(cost(item))
            yield item

    def _guarded(self, items: Iterator[Any]) -> Iterator[Any]:
        """Turn failures into `EvalError` even when a lazy value is consumed after `evaluate` returned."""
        try:
            yield from items
            return
        except EvalError:
            raise
        except Exception as exc:
            error = _runtime_error(exc, self.limits)
        raise error

    # -- guarded built-ins ---------------------------------------------------------------------------------
    def _all(self, items: Any) -> bool:
        return all(self._consume(items, deep=False))

    def _any(self, items: Any) -> bool:
        return any(self._consume(items, deep=False))

    def _dict(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*(self._consume(a, deep=True) for a in args), **kwargs)

    def _copy_size(self, items: Any) -> int | None:
        """The size of a list of the items of `items` (or a bound on it), known without walking it."""
        if isinstance(items, str | bytes):
            return 1 + 2 * len(items)
        if isinstance(items, dict):
            return 1 + self._dict_parts(items)[1]
        if isinstance(items, _COLLECTIONS):
            return self._size(items)
        bound = self._tree.memo.get(id(items))  # zip, enumerate, reversed over collections
        return None if bound is None else bound[1]

    def _list(self, items: Any = ()) -> list[Any]:
        size = self._copy_size(items)
        result = list(self._consume(items, deep=False))
        if size is not None:
            self._tree.remember(result, size)
        return result

    def _tuple(self, items: Any = ()) -> tuple[Any, ...]:
        size = self._copy_size(items)
        result = tuple(self._consume(items, deep=False))
        if size is not None and result is not items:
            self._tree.remember(result, size)
        return result

    def _set(self, items: Any = ()) -> set[Any]:
        return set(self._consume(items, deep=True))

    def _max(self, *args: Any, **kwargs: Any) -> Any:
        return max(*self._extreme_args(args), **kwargs)

    def _min(self, *args: Any, **kwargs: Any) -> Any:
        return min(*self._extreme_args(args), **kwargs)

    def _extreme_args(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        # Comparing each item with the best so far touches at most the smaller of the two.
        if len(args) == 1:
            return (self._consume(args[0], deep=True),)
        sizes = sorted(map(self._size, args))
        self._charge(sum(sizes[:-1]) + (sizes[-2] if len(sizes) > 1 else 0))
        return args

    def _sorted(self, items: Any, **kwargs: Any) -> list[Any]:
        pool = items if isinstance(items, _COLLECTIONS) else self._list(items)
        self._need(len(pool), "sorted()")
        size = self._copy_size(pool) or 1
        # A merge sort reads each item about log2(n) times; each comparison touches at most an item's size.
        self._charge(size * max(1, len(pool).bit_length()))
        result = sorted(pool, **kwargs)
        self._tree.remember(result, size)
        return result

    def _sum(self, items: Any, start: Any = 0) -> Any:
        if type(start) not in (int, float, bool):
            raise EvalError("sum() only adds numbers")
        return sum(self._consume(items, deep=True), start)

    def _enumerate(self, items: Any, start: int = 0) -> enumerate[Any]:
        result = enumerate(items, start)
        if isinstance(items, _COLLECTIONS):
            words = 2 + ((abs(start) + len(items)).bit_length() >> 6)
            self._tree.remember(result, 1 + self._size(items) + len(items) * words)
        return result

    def _zip(self, *iterables: Any, strict: bool = False) -> zip[Any]:
        result = zip(*iterables, strict=strict)
        if all(isinstance(x, _COLLECTIONS) for x in iterables):
            pairs = min(map(len, iterables), default=0)
            self._tree.remember(result, 1 + pairs + sum(map(self._size, iterables)))
        return result

    def _reversed(self, items: Any) -> Iterator[Any]:
        result: Iterator[Any] = reversed(items)
        if isinstance(items, _COLLECTIONS):
            self._tree.remember(result, self._size(items))
        return result

    def _float(self, value: Any = 0.0) -> float:
        if isinstance(value, str | bytes):
            self._charge(len(value))
        return float(value)

    def _int(self, *args: Any, **kwargs: Any) -> int:
        if args and isinstance(args[0], str | bytes):
            if len(args[0]) > 5_000:
                raise self._fail("int() of a string longer than 5000 characters")
            self._charge(len(args[0]))
        return int(*args, **kwargs)

    def _range(self, *args: Any) -> range:
        r = range(*args)
        self._need(len(r), "range")
        return r

    def _round(self, number: Any, ndigits: Any = None) -> Any:
        if isinstance(ndigits, int) and abs(ndigits) > self.limits.max_round_digits:
            raise self._fail(f"round() to more than {self.limits.max_round_digits} digits")
        return round(number, ndigits)

    def _str(self, value: Any = "") -> str:
        return self._render(value, _STR, "", "str()")

    def _render(self, value: Any, conversion: int, spec: str, what: str) -> str:
        """`str`/`repr`/`ascii` then `format`, refused before building text longer than `max_len`."""
        self._charge(self._size(value))
        if type(value) is str and conversion not in (_REPR, _ASCII):
            length = len(value)
        else:
            length = self._printed.of(value, self.limits.max_len)
            if conversion == _ASCII:  # repr with every other character escaped, as \U0001f600 at worst
                length *= 10
        if spec:  # widths and precisions are at most max_format_width; "," grouping adds a third
            length += length // 3 + self.limits.max_format_width + 400
        self._need(length, what)
        if conversion == _REPR:
            value = repr(value)
        elif conversion == _ASCII:
            value = ascii(value)
        elif conversion == _STR:
            value = str(value)
        return format(value, spec)

    def _method(self, obj: Any, name: str) -> Callable[..., Any]:
        """Resolve a whitelisted method of the exact built-in type of `obj`, charged for what it touches."""
        if name not in METHODS.get(type(obj), frozenset()):
            raise EvalError(f"{type(obj).__name__} has no allowed method {name!r}")
        method: Callable[..., Any] = getattr(obj, name)
        if name in ("bit_length", "is_integer"):
            return method
        if name in ("keys", "values", "items"):
            return lambda: self._view(obj, method())
        if name == "get":
            return lambda key, *default: self._call(method, self._size(key), key, *default)
        if type(obj) is str:
            if name == "join":
                return lambda items: self._join(obj, items)
            if name == "replace":
                return lambda old, new, count=-1: self._replace(obj, old, new, count)
            if name in ("center", "ljust", "rjust", "zfill"):
                return lambda width, *fill: self._pad(method, width, *fill)
            return lambda *args, **kwargs: self._call(
                method, len(obj) + self._size(args) + self._size(kwargs), *args, **kwargs
            )
        if name == "copy":
            return lambda: self._call(method, len(obj))
        if name == "index" and isinstance(obj, list):
            return lambda *args: self._list_index(obj, *args)
        if isinstance(obj, list | tuple):  # count, index: compare the argument with every item
            return lambda *args: self._call(method, self._size(obj) + self._size(args), *args)
        # set algebra: hash every item of both sides
        return lambda *args: self._call(method, self._size(obj), *(self._consume(a, deep=True) for a in args))

    def _call(self, method: Callable[..., Any], cost: int, *args: Any, **kwargs: Any) -> Any:
        self._charge(cost)
        return method(*args, **kwargs)

    def _view(self, mapping: dict[Any, Any], view: Any) -> Any:
        # A fresh view object each call: note its size, so that it is not walked again where it goes.
        _, keys, values = self._dict_parts(mapping)
        if isinstance(view, _KEYS):
            self._tree.remember(view, 1 + keys)
        elif isinstance(view, _VALUES):
            self._tree.remember(view, 1 + values)
        else:
            self._tree.remember(view, 1 + len(mapping) + keys + values)
        return view

    def _dict_parts(self, mapping: dict[Any, Any]) -> tuple[dict[Any, Any], int, int]:
        """The total sizes of a dict's keys and of its values, for the last few dicts asked about."""
        parts = self._dicts.get(id(mapping))
        if parts is None:
            self._charge(len(mapping))  # a walk over it; a dict asked about again is not walked again
            keys = self._tree.of(mapping.keys(), self.limits.max_total) - 1
            values = self._tree.of(mapping.values(), self.limits.max_total) - 1
            # Forget dicts only this cache keeps alive (see `_Measure.remember`), and the oldest.
            self._dicts = {k: e for k, e in self._dicts.items() if sys.getrefcount(e[0]) > 2}
            if len(self._dicts) >= _DICTS_REMEMBERED:
                del self._dicts[next(iter(self._dicts))]
            parts = self._dicts[id(mapping)] = (mapping, keys, values)
        return parts

    def _list_index(self, items: list[Any], value: Any, *bounds: Any) -> int:
        self._charge(self._size(items) + self._size(value))
        # list.index's own error message holds repr(value), however big: fail first, in our words.
        if value not in (items[slice(*bounds)] if bounds else items):
            raise EvalError("ValueError: value is not in list")
        return items.index(value, *bounds)

    def _pad(self, method: Callable[..., str], width: int, *fill: str) -> str:
        self._need(width, "padding")
        return method(width, *fill)

    def _join(self, sep: str, items: Any) -> str:
        parts = items if isinstance(items, list | tuple) else list(self._consume(items, deep=False))
        self._need(len(parts), "str.join input")
        length = sum(len(p) if isinstance(p, str) else 0 for p in parts) + len(sep) * len(parts)
        self._need(length, "str.join")
        self._charge(len(parts))
        return sep.join(parts)

    def _replace(self, s: str, old: str, new: str, count: int = -1) -> str:
        n = len(s) + 1 if old == "" else s.count(old)
        n = n if count < 0 else min(n, count)
        self._need(len(s) + n * (len(new) - len(old)), "str.replace")
        self._charge(len(s))
        return s.replace(old, new, count)

    # -- operators -------------------------------------------------------------------------------------------
    def _binop(self, op: ast.operator, a: Any, b: Any) -> Any:
        """Apply a binary operator after the checks and charges that must come before the work."""
        kind = type(op)
        if kind is ast.Mult:
            for seq, n in ((a, b), (b, a)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(n, int):
                    return self._repeat(seq, n)
        elif kind is ast.Add and type(a) is type(b) and isinstance(a, str | bytes | list | tuple):
            self._need(len(a) + len(b), "concatenation")
            size = self._size(a) + self._size(b) - 1
            self._built(size)
            return self._account(a + b, None if isinstance(a, str | bytes) else size)
        elif kind is ast.Mod and isinstance(a, str):
            raise EvalError("%-formatting of strings is not supported; use an f-string")
        if type(a) in (int, bool) and type(b) in (int, bool):
            self._charge(self._int_cost(kind, a, b))
        elif isinstance(a, _COLLECTIONS) or isinstance(b, _COLLECTIONS):  # set algebra, dict union: hashing
            self._charge(self._size(a) + self._size(b))
        return self._account(_BINARY[kind](a, b))

    def _repeat(self, seq: Any, n: int) -> Any:
        count = max(int(n), 0)
        self._need(len(seq) * count, "repetition")
        if isinstance(seq, str | bytes):
            return self._account(seq * count)
        size = 1 + (self._size(seq) - 1) * count
        self._built(size)  # e.g. ['a' * 10**6] * 10**6: a million references, 10^12 characters to print
        return self._account(seq * count, size)

    def _int_cost(self, kind: type[ast.operator], a: int, b: int) -> int:
        """Refuse an integer result wider than `max_int_bits` before computing it, and price the work."""
        most = self.limits.max_int_bits
        wa, wb = 1 + (a.bit_length() >> 6), 1 + (b.bit_length() >> 6)
        if kind is ast.Pow:
            if b <= 0 or abs(a) <= 1:
                return 0
            if b.bit_length() > 64 or math.log2(abs(a)) * b > most:
                raise self._fail(f"power larger than {most} bits")
            words = 1 + int(math.log2(abs(a)) * b) // 64
            return words * words // 16
        if kind is ast.LShift:
            if b > most or a.bit_length() + b > most:
                raise self._fail(f"shift larger than {most} bits")
            return wa + max(b, 0) // 64
        if kind is ast.Mult:
            if a.bit_length() + b.bit_length() > most + 1:
                raise self._fail(f"product larger than {most} bits")
            return wa * wb // 16
        if kind in (ast.FloorDiv, ast.Mod):
            return wa * wb // 16
        return wa + wb if wa + wb > 2 else 0

    def _compare(self, op: ast.cmpop, a: Any, b: Any) -> Any:
        """Compare after charging what the comparison reads."""
        kind = type(op)
        if kind in (ast.In, ast.NotIn):
            if isinstance(b, str | bytes):
                self._charge(len(b) + (len(a) if isinstance(a, str | bytes) else 0))
            elif isinstance(b, (set, frozenset, dict, _KEYS, _ITEMS)):
                self._charge(self._size(a))  # hashing the needle
            elif isinstance(b, range) and type(a) in (int, bool):
                pass
            elif isinstance(b, _COLLECTIONS):
                self._charge(self._size(b))
            else:
                needle = self._size(a)
                b = self._feed(b, lambda item: min(needle, self._size(item)))
        elif kind not in (ast.Is, ast.IsNot):
            self._charge(min(self._size(a), self._size(b)))
        return _COMPARE[kind](a, b)

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
            if not self._compare(op, left, right):
                return False
            left = right
        return True

    def _ev_IfExp(self, node: ast.IfExp, scope: ChainMap[str, Any]) -> Any:
        return self.eval(node.body if self.eval(node.test, scope) else node.orelse, scope)

    def _ev_Call(self, node: ast.Call, scope: ChainMap[str, Any]) -> Any:
        if isinstance(node.func, ast.Attribute):
            func = self._method(self.eval(node.func.value, scope), node.func.attr)
            name = node.func.attr
        elif isinstance(node.func, ast.Name) and node.func.id in self.builtins:
            func = self.builtins[node.func.id]
            name = node.func.id
        else:
            raise EvalError("only built-ins and methods can be called")
        args = self._elements(node.args, scope)
        kwargs = {kw.arg: self.eval(kw.value, scope) for kw in node.keywords if kw.arg}
        result = func(*args, **kwargs)
        # These hand back a value that already exists (an argument or an item): nothing new to charge.
        return result if name in ("get", "max", "min") else self._account(result)

    def _ev_Subscript(self, node: ast.Subscript, scope: ChainMap[str, Any]) -> Any:
        value, index = self.eval(node.value, scope), self.eval(node.slice, scope)
        if isinstance(index, slice):
            part = value[index]  # a copy
            if isinstance(value, list | tuple) and self._size(value) == 1 + len(value):
                return self._account(part, 1 + len(part))  # every item counts 1, so every slice is known
            return self._account(part)
        if isinstance(value, dict):
            self._charge(self._size(index))  # hashing the key
        return value[index]

    def _ev_Slice(self, node: ast.Slice, scope: ChainMap[str, Any]) -> slice:
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if p is None else self.eval(p, scope) for p in parts))

    def _elements(self, nodes: list[ast.expr], scope: ChainMap[str, Any]) -> list[Any]:
        """Evaluate display or argument elements, expanding `*iterable` within the size limit."""
        out: list[Any] = []
        for elt in nodes:
            if isinstance(elt, ast.Starred):
                items = self.eval(elt.value, scope)
                if isinstance(items, _COLLECTIONS):
                    self._need(len(out) + len(items), "display")
                out.extend(items)
            else:
                out.append(self.eval(elt, scope))
            self._need(len(out), "display")
        return out

    def _ev_List(self, node: ast.List, scope: ChainMap[str, Any]) -> Any:
        return self._account(self._elements(node.elts, scope))

    def _ev_Tuple(self, node: ast.Tuple, scope: ChainMap[str, Any]) -> Any:
        return self._account(tuple(self._elements(node.elts, scope)))

    def _ev_Set(self, node: ast.Set, scope: ChainMap[str, Any]) -> Any:
        return self._account(set(self._consume(self._elements(node.elts, scope), deep=True)))

    def _ev_Dict(self, node: ast.Dict, scope: ChainMap[str, Any]) -> Any:
        out: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                out.update(self._consume(self.eval(value, scope), deep=True))
            else:
                k = self.eval(key, scope)
                self._charge(self._size(k))
                out[k] = self.eval(value, scope)
            self._need(len(out), "dict display")
        return self._account(out)

    def _ev_JoinedStr(self, node: ast.JoinedStr, scope: ChainMap[str, Any]) -> Any:
        parts = [
            self.eval(v, scope) if isinstance(v, ast.FormattedValue) else constant_text(v)
            for v in node.values
        ]
        self._need(sum(map(len, parts)), "f-string")
        return self._account("".join(parts))

    def _ev_FormattedValue(self, node: ast.FormattedValue, scope: ChainMap[str, Any]) -> str:
        value = self.eval(node.value, scope)
        spec = "" if node.format_spec is None else constant_text(node.format_spec)
        return self._render(value, node.conversion, spec, "formatted value")

    # -- comprehensions -------------------------------------------------------------------------------------
    def _bind(self, target: ast.AST, value: Any, names: MutableMapping[str, Any]) -> None:
        if isinstance(target, ast.Name):
            names[target.id] = value
            return
        assert isinstance(target, ast.Tuple | ast.List)  # guaranteed by check()
        if isinstance(value, _COLLECTIONS) and len(value) != len(target.elts):  # before copying it
            raise EvalError(f"cannot unpack {len(value)} values into {len(target.elts)} names")
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
        size = 1
        for inner in self._scopes(node.generators, scope):
            item = self.eval(node.elt, inner)
            out.append(item)
            self._need(len(out), "list comprehension")
            size += self._size(item)
            self._built(size)
        return self._account(out, size)

    def _ev_SetComp(self, node: ast.SetComp, scope: ChainMap[str, Any]) -> Any:
        out = set()
        for inner in self._scopes(node.generators, scope):
            item = self.eval(node.elt, inner)
            self._charge(self._size(item))  # hashing it
            out.add(item)
            self._need(len(out), "set comprehension")
        return self._account(out)

    def _ev_DictComp(self, node: ast.DictComp, scope: ChainMap[str, Any]) -> Any:
        out = {}
        for inner in self._scopes(node.generators, scope):
            key = self.eval(node.key, inner)
            self._charge(self._size(key))
            out[key] = self.eval(node.value, inner)
            self._need(len(out), "dict comprehension")
        return self._account(out)

    def _ev_GeneratorExp(self, node: ast.GeneratorExp, scope: ChainMap[str, Any]) -> Iterator[Any]:
        return self._guarded(self.eval(node.elt, inner) for inner in self._scopes(node.generators, scope))


def _one(item: Any) -> int:
    return 1
