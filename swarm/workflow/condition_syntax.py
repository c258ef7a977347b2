"""Edge conditions as text: tokenizer, syntax tree, recursive-descent parser and canonical text.

User text never reaches Python's `eval`: a hand-written tokenizer and parser turn it into a small tree
(`Node`), which `swarm.workflow.condition_eval` compiles and `swarm.workflow.condition_types` checks.
Grammar, loosest binding first::

    or   := and (("OR" | "||") and)*
    and  := not (("AND" | "&&") not)*
    not  := ("NOT" | "!") not | cmp
    cmp  := atom [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") atom]
    atom := number | string | true | false | null | "[" literals "]" | "(" or ")"
          | SUCCESS | FAILURE | ALWAYS | SKIPPED | output.NAME (.field | [index])* | len(atom) | exists(ref)

Keywords are case-insensitive; `outputs.NAME` and `output["odd-name"]` are accepted too. A text naming
no state word means `SUCCESS AND <text>` (`parse_tree` adds it). `render` gives the canonical text of a
tree, by which conditions are compared.

Costs are bounded: text <= 1,000 characters, <= 200 tokens, nesting <= 32.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from swarm.errors import InvalidSpec

__all__ = [
    "MAX_DEPTH",
    "MAX_TEXT",
    "MAX_TOKENS",
    "STATUS_WORDS",
    "Bool",
    "Call",
    "Cmp",
    "ConditionError",
    "Lit",
    "Node",
    "Not",
    "Ref",
    "Status",
    "parse_tree",
    "render",
    "walk",
]

MAX_TEXT = 1000
MAX_TOKENS = 200
MAX_DEPTH = 32
#: The parent states a condition names: SUCCESS (done), FAILURE (failed or cancelled), SKIPPED, ALWAYS.
STATUS_WORDS = ("SUCCESS", "FAILURE", "SKIPPED", "ALWAYS")

_CMP_OPS = ("==", "!=", "<", "<=", ">", ">=")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "/": "/", "0": "\0"}


class ConditionError(InvalidSpec):
    """A condition's text is invalid; the message says what and at which character (1-based)."""

    def __init__(self, what: str, column: int) -> None:
        self.column = column
        super().__init__(f"{what} at character {column}")


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
class Status:
    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Lit:
    value: Any  # None, bool, int, float, str, or a tuple of those (a list literal)
    pos: int


@dataclass(frozen=True, slots=True)
class Ref:
    name: str
    path: tuple[str | int, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Call:
    fn: str  # len | exists
    arg: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Cmp:
    op: str
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Bool:
    op: str  # AND | OR
    items: tuple[Node, ...]
    pos: int


Node = Status | Lit | Ref | Call | Cmp | Not | Bool

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

    def parse_or(self) -> Node:
        return self._chain("OR", "||", self.parse_and)

    def parse_and(self) -> Node:
        return self._chain("AND", "&&", self.parse_not)

    def _chain(self, word: str, symbol: str, sub: Callable[[], Node]) -> Node:
        first = sub()
        items = [first]
        while self.word(word) or self.op(symbol):
            self.take()
            items.append(sub())
        if len(items) == 1:
            return first
        flat: list[Node] = []
        for item in items:
            flat.extend(item.items if isinstance(item, Bool) and item.op == word else (item,))
        return Bool(word, tuple(flat), _pos(first))

    def parse_not(self) -> Node:
        if (self.word("NOT") and not self._next_is_in()) or self.op("!"):
            tok = self.take()
            self.nest(tok.pos)
            operand = self.parse_not()
            self.depth -= 1
            return Not(operand, tok.pos)
        return self.parse_cmp()

    def _next_is_in(self) -> bool:
        nxt = self.toks[self.i + 1]
        return nxt.kind == "ID" and nxt.value.upper() == "IN"

    def parse_cmp(self) -> Node:
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
        return Cmp(op, left, right, tok.pos)

    def parse_atom(self) -> Node:
        tok = self.peek()
        if tok.kind in ("NUM", "STR"):
            self.take()
            return Lit(tok.value, tok.pos)
        if self.op("-"):
            self.take()
            num = self.peek()
            if num.kind != "NUM":
                raise ConditionError("'-' must be followed by a number", tok.pos + 1)
            self.take()
            return Lit(-num.value, tok.pos)
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

    def parse_list(self) -> Lit:
        start = self.take()
        self.nest(start.pos)
        items: list[Any] = []
        while not self.op("]"):
            item = self.parse_atom()
            if not isinstance(item, Lit):
                raise ConditionError("a list literal holds only literals", _pos(item) + 1)
            items.append(item.value)
            if not self.op("]"):
                self.expect(",", "between list items")
        self.take()
        self.depth -= 1
        return Lit(tuple(items), start.pos)

    def parse_word(self, tok: _Tok) -> Node:
        upper = tok.value.upper()
        self.take()
        if upper in STATUS_WORDS:
            return Status(upper, tok.pos)
        if upper in ("TRUE", "FALSE", "NULL"):
            return Lit({"TRUE": True, "FALSE": False, "NULL": None}[upper], tok.pos)
        if upper in ("LEN", "EXISTS") and self.op("("):
            self.take()
            self.nest(tok.pos)
            arg = self.parse_or() if upper == "LEN" else self.parse_atom()
            if upper == "EXISTS" and not isinstance(arg, Ref):
                raise ConditionError("exists() takes an output reference like output.name", _pos(arg) + 1)
            self.depth -= 1
            self.expect(")", f"to close {tok.value}(")
            return Call(upper.lower(), arg, tok.pos)
        if upper in ("OUTPUT", "OUTPUTS"):
            return self.parse_ref(tok)
        raise ConditionError(
            f"unknown name {tok.value!r} (outputs are read as output.{tok.value}; states are "
            "SUCCESS, FAILURE, ALWAYS, SKIPPED)",
            tok.pos + 1,
        )

    def parse_ref(self, tok: _Tok) -> Ref:
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
        return Ref(path[0], tuple(path[1:]), tok.pos)


def _describe(tok: _Tok) -> str:
    return "the end of the condition" if tok.kind == "END" else repr(tok.value)


def _pos(node: Node) -> int:
    return node.pos


def walk(node: Node) -> list[Node]:
    out: list[Node] = [node]
    if isinstance(node, Bool):
        for item in node.items:
            out.extend(walk(item))
    elif isinstance(node, Not):
        out.extend(walk(node.operand))
    elif isinstance(node, Cmp):
        out.extend(walk(node.left) + walk(node.right))
    elif isinstance(node, Call):
        out.extend(walk(node.arg))
    return out


# ---------------------------------------------------------------------------------------------- text

_PREC = {"OR": 1, "AND": 2}


def _prec(node: Node) -> int:
    if isinstance(node, Bool):
        return _PREC[node.op]
    if isinstance(node, Not):
        return 3
    if isinstance(node, Cmp):
        return 4
    return 5


def render(node: Node, min_prec: int = 0) -> str:
    if isinstance(node, Status):
        out = node.name
    elif isinstance(node, Lit):
        out = _render_literal(node.value)
    elif isinstance(node, Ref):
        out = "output" + "".join(_render_step(step) for step in (node.name, *node.path))
    elif isinstance(node, Call):
        out = f"{node.fn}({render(node.arg)})"
    elif isinstance(node, Cmp):
        out = f"{render(node.left, 5)} {node.op} {render(node.right, 5)}"
    elif isinstance(node, Not):
        out = "NOT " + render(node.operand, 3)
    else:
        out = f" {node.op} ".join(render(item, _PREC[node.op] + 1) for item in node.items)
    return f"({out})" if _prec(node) < min_prec else out


def _render_literal(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_render_literal(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _render_step(step: str | int) -> str:
    if isinstance(step, str) and step.isidentifier() and step.isascii():
        return "." + step
    return "[" + json.dumps(step, ensure_ascii=False) + "]"


def parse_tree(text: str) -> Node:
    """The syntax tree of a condition's text; raises ConditionError naming the problem and its character."""
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
    if not any(isinstance(n, Status) for n in walk(node)):
        success = Status("SUCCESS", 0)
        items = node.items if isinstance(node, Bool) and node.op == "AND" else (node,)
        node = Bool("AND", (success, *items), 0)
    return node
