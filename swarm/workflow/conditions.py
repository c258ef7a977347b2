"""Edge conditions: a tiny typed expression language over a parent's final state and outputs.

Theory of operation
-------------------
A condition is evaluated once per edge per run, so the text is parsed once (hand-written tokenizer and
recursive descent; user text never reaches Python's `eval`) into a small tree, and the tree is compiled into
closures. Grammar, loosest binding first::

    or   := and (("OR" | "||") and)*
    and  := not (("AND" | "&&") not)*
    not  := ("NOT" | "!") not | cmp
    cmp  := atom [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") atom]
    atom := number | string | true | false | null | "[" literals "]" | "(" or ")"
          | SUCCESS | FAILURE | ALWAYS | SKIPPED | output.NAME (.field | [index])* | len(atom) | exists(ref)

Keywords are case-insensitive; `outputs.NAME` and `output["odd-name"]` are accepted too. `SUCCESS` holds
when the parent is done, `FAILURE` when it failed or was cancelled, `SKIPPED` when it was skipped, `ALWAYS`
in any final state. A text naming no state word means `SUCCESS AND <text>`.

Evaluation uses three-valued (Kleene) logic, as SQL does with NULL: reading a missing output, comparing
values of incompatible types (a number with a string, a boolean with a number), or ordering values that
have no order yields *unknown*; `false AND unknown` is false, `true OR unknown` is true, `NOT unknown` is
unknown, and a condition whose final value is unknown is false. So an absent output or a type mismatch
never makes an edge fire, however the expression is negated, and `evaluate` never raises for data.
`null` compared with anything is an ordinary equality test; `exists(ref)` is true when the reference
resolves to a value other than null; `x in y` needs a list (or a map: its keys) on the right.

Costs are bounded: text <= 1,000 characters, <= 200 tokens, nesting <= 32; at evaluation an `in` against
a list of more than 1,000 items, or an equality between structures of more than 1,000 items, is unknown
rather than a long loop.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from swarm.errors import InvalidSpec

__all__ = [
    "MAX_DEPTH",
    "MAX_LIST_ITEMS",
    "MAX_TEXT",
    "MAX_TOKENS",
    "PARENT_STATES",
    "Condition",
    "ConditionError",
    "parse_condition",
]

MAX_TEXT = 1000
MAX_TOKENS = 200
MAX_DEPTH = 32
MAX_LIST_ITEMS = 1000
PARENT_STATES = frozenset({"done", "failed", "skipped", "cancelled"})

_STATUS_STATES: dict[str, frozenset[str]] = {
    "SUCCESS": frozenset({"done"}),
    "FAILURE": frozenset({"failed", "cancelled"}),
    "SKIPPED": frozenset({"skipped"}),
    "ALWAYS": PARENT_STATES,
}
_CMP_OPS = ("==", "!=", "<", "<=", ">", ">=")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "/": "/", "0": "\0"}


class ConditionError(InvalidSpec):
    """A condition's text is invalid; the message says what and at which character (1-based)."""

    def __init__(self, what: str, column: int) -> None:
        self.column = column
        super().__init__(f"{what} at character {column}")


class _Missing(enum.Enum):
    MISSING = 0


_MISSING = _Missing.MISSING

# ---------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # NUM, STR, ID, OP, END
    value: Any
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if len(toks) >= MAX_TOKENS:
            raise ConditionError(f"condition has more than {MAX_TOKENS} tokens", i + 1)
        if c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            i = _number(text, i, toks)
        elif c in "\"'":
            i = _string(text, i, toks)
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            toks.append(_Tok("ID", text[i:j], i))
            i = j
        elif text.startswith(("==", "!=", "<=", ">=", "&&", "||"), i):
            toks.append(_Tok("OP", text[i : i + 2], i))
            i += 2
        elif c in "<>()[],.!-":
            toks.append(_Tok("OP", c, i))
            i += 1
        elif c == "=":
            raise ConditionError("'=' is not an operator (write '==')", i + 1)
        else:
            raise ConditionError(f"unexpected character {c!r}", i + 1)
    toks.append(_Tok("END", None, n))
    return toks


def _number(text: str, i: int, toks: list[_Tok]) -> int:
    j, n = i, len(text)
    while j < n and (text[j].isdigit() or text[j] in ".eE_" or (text[j] in "+-" and text[j - 1] in "eE")):
        j += 1
    raw = text[i:j]
    try:
        value: int | float = int(raw) if raw.isdigit() else float(raw)
    except ValueError:
        raise ConditionError(f"bad number {raw!r}", i + 1) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConditionError(f"number {raw!r} is out of range", i + 1)
    toks.append(_Tok("NUM", value, i))
    return j


def _string(text: str, i: int, toks: list[_Tok]) -> int:
    quote, j, n, out = text[i], i + 1, len(text), []
    while j < n and text[j] != quote:
        if text[j] == "\\":
            if j + 1 >= n:
                break
            e = text[j + 1]
            if e == "u" and j + 6 <= n and all(h in "0123456789abcdefABCDEF" for h in text[j + 2 : j + 6]):
                out.append(chr(int(text[j + 2 : j + 6], 16)))
                j += 6
                continue
            if e not in _ESCAPES:
                raise ConditionError(f"unknown escape '\\{e}' in string", j + 1)
            out.append(_ESCAPES[e])
            j += 2
        else:
            out.append(text[j])
            j += 1
    if j >= n:
        raise ConditionError("unterminated string", i + 1)
    toks.append(_Tok("STR", "".join(out), i))
    return j + 1


# ---------------------------------------------------------------------------------------------- tree


@dataclass(frozen=True, slots=True)
class _Status:
    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class _Lit:
    value: Any  # None, bool, int, float, str, or a tuple of those (a list literal)
    pos: int


@dataclass(frozen=True, slots=True)
class _Ref:
    name: str
    path: tuple[str | int, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class _Call:
    fn: str  # len | exists
    arg: _Node
    pos: int


@dataclass(frozen=True, slots=True)
class _Cmp:
    op: str
    left: _Node
    right: _Node
    pos: int


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Node
    pos: int


@dataclass(frozen=True, slots=True)
class _Bool:
    op: str  # AND | OR
    items: tuple[_Node, ...]
    pos: int


_Node = _Status | _Lit | _Ref | _Call | _Cmp | _Not | _Bool

# ---------------------------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def word(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "ID" and tok.value.upper() in words

    def op(self, *ops: str) -> bool:
        tok = self.peek()
        return tok.kind == "OP" and tok.value in ops

    def expect(self, op: str, what: str) -> _Tok:
        if not self.op(op):
            raise ConditionError(f"expected '{op}' {what}, got {_describe(self.peek())}", self.peek().pos + 1)
        return self.take()

    def nest(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ConditionError(f"condition nests deeper than {MAX_DEPTH} levels", pos + 1)

    def parse_or(self) -> _Node:
        return self._chain("OR", "||", self.parse_and)

    def parse_and(self) -> _Node:
        return self._chain("AND", "&&", self.parse_not)

    def _chain(self, word: str, symbol: str, sub: Callable[[], _Node]) -> _Node:
        first = sub()
        items = [first]
        while self.word(word) or self.op(symbol):
            self.take()
            items.append(sub())
        if len(items) == 1:
            return first
        flat: list[_Node] = []
        for item in items:
            flat.extend(item.items if isinstance(item, _Bool) and item.op == word else (item,))
        return _Bool(word, tuple(flat), _pos(first))

    def parse_not(self) -> _Node:
        if (self.word("NOT") and not self._next_is_in()) or self.op("!"):
            tok = self.take()
            self.nest(tok.pos)
            operand = self.parse_not()
            self.depth -= 1
            return _Not(operand, tok.pos)
        return self.parse_cmp()

    def _next_is_in(self) -> bool:
        nxt = self.toks[self.i + 1]
        return nxt.kind == "ID" and nxt.value.upper() == "IN"

    def parse_cmp(self) -> _Node:
        left = self.parse_atom()
        tok = self.peek()
        if self.op(*_CMP_OPS):
            op = self.take().value
        elif self.word("IN"):
            self.take()
            op = "in"
        elif self.word("NOT") and self._next_is_in():
            self.i += 2
            op = "not in"
        else:
            return left
        right = self.parse_atom()
        if self.op(*_CMP_OPS) or self.word("IN"):
            raise ConditionError("comparisons do not chain (use AND)", self.peek().pos + 1)
        return _Cmp(op, left, right, tok.pos)

    def parse_atom(self) -> _Node:
        tok = self.peek()
        if tok.kind in ("NUM", "STR"):
            self.take()
            return _Lit(tok.value, tok.pos)
        if self.op("-"):
            self.take()
            num = self.peek()
            if num.kind != "NUM":
                raise ConditionError("'-' must be followed by a number", tok.pos + 1)
            self.take()
            return _Lit(-num.value, tok.pos)
        if self.op("("):
            self.take()
            self.nest(tok.pos)
            inner = self.parse_or()
            self.depth -= 1
            self.expect(")", "to close the '(' at character " + str(tok.pos + 1))
            return inner
        if self.op("["):
            return self.parse_list()
        if tok.kind == "ID":
            return self.parse_word(tok)
        raise ConditionError(f"expected a value, got {_describe(tok)}", tok.pos + 1)

    def parse_list(self) -> _Lit:
        start = self.take()
        self.nest(start.pos)
        items: list[Any] = []
        while not self.op("]"):
            item = self.parse_atom()
            if not isinstance(item, _Lit):
                raise ConditionError("a list literal holds only literals", _pos(item) + 1)
            items.append(item.value)
            if not self.op("]"):
                self.expect(",", "between list items")
        self.take()
        self.depth -= 1
        return _Lit(tuple(items), start.pos)

    def parse_word(self, tok: _Tok) -> _Node:
        upper = tok.value.upper()
        self.take()
        if upper in _STATUS_STATES:
            return _Status(upper, tok.pos)
        if upper in ("TRUE", "FALSE", "NULL"):
            return _Lit({"TRUE": True, "FALSE": False, "NULL": None}[upper], tok.pos)
        if upper in ("LEN", "EXISTS") and self.op("("):
            self.take()
            self.nest(tok.pos)
            arg = self.parse_or() if upper == "LEN" else self.parse_atom()
            if upper == "EXISTS" and not isinstance(arg, _Ref):
                raise ConditionError("exists() takes an output reference like output.name", _pos(arg) + 1)
            self.depth -= 1
            self.expect(")", f"to close {tok.value}(")
            return _Call(upper.lower(), arg, tok.pos)
        if upper in ("OUTPUT", "OUTPUTS"):
            return self.parse_ref(tok)
        raise ConditionError(
            f"unknown name {tok.value!r} (outputs are read as output.{tok.value}; states are "
            "SUCCESS, FAILURE, ALWAYS, SKIPPED)",
            tok.pos + 1,
        )

    def parse_ref(self, tok: _Tok) -> _Ref:
        path: list[str | int] = []
        while self.op(".", "["):
            if self.take().value == ".":
                name = self.take()
                if name.kind != "ID":
                    raise ConditionError(
                        f"expected a field name after '.', got {_describe(name)}", name.pos + 1
                    )
                path.append(name.value)
            else:
                key = self.take()
                if key.kind == "STR" or (key.kind == "NUM" and isinstance(key.value, int)):
                    path.append(key.value)
                else:
                    raise ConditionError("expected a string key or an integer index in [...]", key.pos + 1)
                self.expect("]", "after the index")
        if not path or not isinstance(path[0], str):
            raise ConditionError(
                f"expected an output name after {tok.value!r}, e.g. output.rowCount", tok.pos + 1
            )
        return _Ref(path[0], tuple(path[1:]), tok.pos)


def _describe(tok: _Tok) -> str:
    return "the end of the condition" if tok.kind == "END" else repr(tok.value)


def _pos(node: _Node) -> int:
    return node.pos


def _walk(node: _Node) -> list[_Node]:
    out: list[_Node] = [node]
    if isinstance(node, _Bool):
        for item in node.items:
            out.extend(_walk(item))
    elif isinstance(node, _Not):
        out.extend(_walk(node.operand))
    elif isinstance(node, _Cmp):
        out.extend(_walk(node.left) + _walk(node.right))
    elif isinstance(node, _Call):
        out.extend(_walk(node.arg))
    return out


# ---------------------------------------------------------------------------------------------- values

_Tri = bool | None  # None is "unknown"
_BoolFn = Callable[[str, Mapping[str, Any]], _Tri]
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


def _compile_bool(node: _Node) -> _BoolFn:
    if isinstance(node, _Status):
        states = _STATUS_STATES[node.name]
        return lambda state, _o: state in states
    if isinstance(node, _Not):
        inner = _compile_bool(node.operand)

        def not_(state: str, o: Mapping[str, Any]) -> _Tri:
            v = inner(state, o)
            return None if v is None else not v

        return not_
    if isinstance(node, _Bool):
        return _compile_junction(node)
    if isinstance(node, _Cmp):
        return _compile_cmp(node)
    if isinstance(node, _Call) and node.fn == "exists":
        ref = _compile_value(node.arg)
        return lambda state, o: _not_null(ref(state, o))
    value = _compile_value(node)
    return lambda state, o: _truth(value(state, o))


def _not_null(v: Any) -> bool:
    return v is not _MISSING and v is not None


def _truth(v: Any) -> _Tri:
    return v if isinstance(v, bool) else None


def _compile_junction(node: _Bool) -> _BoolFn:
    parts = tuple(_compile_bool(item) for item in node.items)
    if node.op == "AND":

        def and_(state: str, o: Mapping[str, Any]) -> _Tri:
            result: _Tri = True
            for part in parts:
                v = part(state, o)
                if v is False:
                    return False
                if v is None:
                    result = None
            return result

        return and_

    def or_(state: str, o: Mapping[str, Any]) -> _Tri:
        result: _Tri = False
        for part in parts:
            v = part(state, o)
            if v is True:
                return True
            if v is None:
                result = None
        return result

    return or_


def _compile_cmp(node: _Cmp) -> _BoolFn:
    left = _compile_value(node.left)
    op = node.op
    if op in ("in", "not in"):
        negate = op == "not in"
        if isinstance(node.right, _Lit) and isinstance(node.right.value, tuple):
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


def _compile_value(node: _Node) -> _ValFn:
    if isinstance(node, _Lit):
        const = list(node.value) if isinstance(node.value, tuple) else node.value
        return lambda _s, _o: const
    if isinstance(node, _Ref):
        return _compile_ref(node)
    if isinstance(node, _Call) and node.fn == "len":
        arg = _compile_value(node.arg)
        return lambda state, o: _length(arg(state, o))
    as_bool = _compile_bool(node)

    def boolean(state: str, o: Mapping[str, Any]) -> Any:
        v = as_bool(state, o)
        return _MISSING if v is None else v

    return boolean


def _length(v: Any) -> Any:
    return len(v) if isinstance(v, str | list | tuple | Mapping) else _MISSING


def _compile_ref(node: _Ref) -> _ValFn:
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


# ---------------------------------------------------------------------------------------------- text

_PREC = {"OR": 1, "AND": 2}


def _prec(node: _Node) -> int:
    if isinstance(node, _Bool):
        return _PREC[node.op]
    if isinstance(node, _Not):
        return 3
    if isinstance(node, _Cmp):
        return 4
    return 5


def _render(node: _Node, min_prec: int = 0) -> str:
    if isinstance(node, _Status):
        out = node.name
    elif isinstance(node, _Lit):
        out = _render_literal(node.value)
    elif isinstance(node, _Ref):
        out = "output" + "".join(_render_step(step) for step in (node.name, *node.path))
    elif isinstance(node, _Call):
        out = f"{node.fn}({_render(node.arg)})"
    elif isinstance(node, _Cmp):
        out = f"{_render(node.left, 5)} {node.op} {_render(node.right, 5)}"
    elif isinstance(node, _Not):
        out = "NOT " + _render(node.operand, 3)
    else:
        out = f" {node.op} ".join(_render(item, _PREC[node.op] + 1) for item in node.items)
    return f"({out})" if _prec(node) < min_prec else out


def _render_literal(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_render_literal(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _render_step(step: str | int) -> str:
    if isinstance(step, str) and step.isidentifier() and step.isascii():
        return "." + step
    return "[" + json.dumps(step, ensure_ascii=False) + "]"


# ---------------------------------------------------------------------------------------------- types


@dataclass(frozen=True, slots=True)
class _Ty:
    kind: str  # NUMBER STRING BOOLEAN NULL ARRAY MAP ANY
    elem: _Ty | None = None

    def __str__(self) -> str:
        return f"{self.kind}<{self.elem}>" if self.elem is not None and self.elem.kind != "ANY" else self.kind


_ANY = _Ty("ANY")
_SCALARS = {
    **dict.fromkeys(("STRING", "STR", "TEXT"), "STRING"),
    **dict.fromkeys(("NUMBER", "INTEGER", "INT", "LONG", "FLOAT", "DOUBLE", "DECIMAL"), "NUMBER"),
    **dict.fromkeys(("BOOLEAN", "BOOL"), "BOOLEAN"),
}


def _schema_type(text: str) -> _Ty:
    s = text.strip().upper().replace(" ", "")
    if s in _SCALARS:
        return _Ty(_SCALARS[s])
    for prefix in ("ARRAY", "LIST"):
        if s == prefix:
            return _Ty("ARRAY", _ANY)
        if s.startswith(prefix + "<") and s.endswith(">"):
            return _Ty("ARRAY", _schema_type(s[len(prefix) + 1 : -1]))
    if s == "MAP":
        return _Ty("MAP", _ANY)
    if s.startswith("MAP<") and s.endswith(">"):
        inner, depth = s[4:-1], 0
        for i, c in enumerate(inner):
            depth += (c == "<") - (c == ">")
            if c == "," and depth == 0:
                return _Ty("MAP", _schema_type(inner[i + 1 :]))
    return _ANY


class _Checker:
    def __init__(self, types: Mapping[str, str]) -> None:
        self.types = types
        self.problems: list[str] = []

    def report(self, node: _Node, what: str) -> None:
        self.problems.append(f"{_render(node)} at character {node.pos + 1}: {what}")

    def boolean(self, node: _Node) -> None:
        t = self.static(node)
        if t.kind not in ("BOOLEAN", "ANY"):
            self.report(node, f"expected a true/false value, got {t}")

    def static(self, node: _Node) -> _Ty:
        if isinstance(node, _Lit):
            return _literal_type(node.value)
        if isinstance(node, _Ref):
            return self.ref(node)
        if isinstance(node, _Call):
            t = self.static(node.arg)
            if node.fn == "len" and t.kind in ("NUMBER", "BOOLEAN", "NULL"):
                self.report(node, f"len() of a {t} value")
            return _Ty("NUMBER") if node.fn == "len" else _Ty("BOOLEAN")
        if isinstance(node, _Not):
            self.boolean(node.operand)
        elif isinstance(node, _Bool):
            for item in node.items:
                self.boolean(item)
        elif isinstance(node, _Cmp):
            self.compare(node)
        return _Ty("BOOLEAN")

    def ref(self, node: _Ref) -> _Ty:
        if node.name not in self.types:
            self.report(node, f"the parent declares no output named {node.name!r}")
            return _ANY
        t = _schema_type(self.types[node.name])
        for step in node.path:
            if t.kind == "ANY":
                return _ANY
            if (isinstance(step, str) and t.kind == "MAP") or (isinstance(step, int) and t.kind == "ARRAY"):
                t = t.elem or _ANY
            else:
                self.report(
                    node, f"a {t} value has no {'field' if isinstance(step, str) else 'index'} {step!r}"
                )
                return _ANY
        return t

    def compare(self, node: _Cmp) -> None:
        tl, tr = self.static(node.left), self.static(node.right)
        known = tl.kind not in ("ANY", "NULL") and tr.kind not in ("ANY", "NULL")
        if node.op in ("==", "!="):
            if known and tl.kind != tr.kind:
                self.report(node, f"compares a {tl} value with a {tr} value (always false)")
        elif node.op in ("in", "not in"):
            if tr.kind not in ("ARRAY", "MAP", "ANY"):
                self.report(node, f"'{node.op}' needs a list or a map on the right, got {tr}")
                return
            elem = tr.elem or _ANY if tr.kind == "ARRAY" else _Ty("STRING")
            if tl.kind not in ("ANY", "NULL") and elem.kind not in ("ANY", "NULL") and tl.kind != elem.kind:
                self.report(node, f"looks for a {tl} value among {elem} values (always false)")
        elif (tl.kind != "ANY" and tl.kind not in ("NUMBER", "STRING")) or (
            tr.kind != "ANY" and tr.kind not in ("NUMBER", "STRING")
        ):
            self.report(node, f"orders {tl} and {tr} values; only numbers and strings have an order")
        elif known and tl.kind != tr.kind:
            self.report(node, f"orders a {tl} value against a {tr} value (always false)")


def _literal_type(value: Any) -> _Ty:
    if value is None:
        return _Ty("NULL")
    if isinstance(value, bool):
        return _Ty("BOOLEAN")
    if isinstance(value, int | float):
        return _Ty("NUMBER")
    if isinstance(value, str):
        return _Ty("STRING")
    kinds = {_literal_type(v) for v in value}
    return _Ty("ARRAY", kinds.pop() if len(kinds) == 1 else _ANY)


# ---------------------------------------------------------------------------------------------- public


class Condition:
    """A parsed, compiled edge condition; immutable, compared and hashed by its canonical text."""

    __slots__ = ("_fn", "_tree", "outputs_referenced", "text")

    def __init__(self, node: _Node) -> None:
        self._tree = node
        self._fn = _compile_bool(node)
        self.outputs_referenced: frozenset[str] = frozenset(
            n.name for n in _walk(node) if isinstance(n, _Ref)
        )
        self.text: str = _render(node)

    def evaluate(self, parent_state: str, outputs: Mapping[str, Any]) -> bool:
        """Whether the edge fires, given its parent's final state and output mapping; never raises for data.

        Raises ValueError only for a `parent_state` outside done/failed/skipped/cancelled (a caller's bug).
        """
        if parent_state not in PARENT_STATES:
            raise ValueError(f"parent_state must be one of {sorted(PARENT_STATES)}, got {parent_state!r}")
        return self._fn(parent_state, outputs) is True

    def typecheck(self, output_types: Mapping[str, str]) -> list[str]:
        """Static problems given the parent's outputSchema types (name -> seed type); unknown types pass.

        Each problem names the sub-expression and its character, e.g. comparing a STRING output with a
        number, reading an output the parent does not declare, or ordering booleans.
        """
        checker = _Checker(output_types)
        checker.boolean(self._tree)
        return checker.problems

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"


def parse_condition(text: str) -> Condition:
    """Parse and compile an edge condition; raises ConditionError naming the problem and its character."""
    if not isinstance(text, str):
        raise ConditionError(f"a condition is a string, got {type(text).__name__}", 1)
    if len(text) > MAX_TEXT:
        raise ConditionError(f"condition is longer than {MAX_TEXT} characters", MAX_TEXT + 1)
    if not text.strip():
        raise ConditionError("empty condition (omit it to mean SUCCESS)", 1)
    parser = _Parser(_tokenize(text))
    node = parser.parse_or()
    end = parser.peek()
    if end.kind != "END":
        raise ConditionError(f"unexpected {_describe(end)} after a complete expression", end.pos + 1)
    if not any(isinstance(n, _Status) for n in _walk(node)):
        success = _Status("SUCCESS", 0)
        items = node.items if isinstance(node, _Bool) and node.op == "AND" else (node,)
        node = _Bool("AND", (success, *items), 0)
    return Condition(node)
