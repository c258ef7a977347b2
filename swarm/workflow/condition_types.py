"""Checking an edge condition against its parent's declared outputs, before any run.

The contract check (`swarm.workflow.validate`) asks, for each edge, whether the condition's tree
(`swarm.workflow.condition_syntax`) makes sense for the parent's outputSchema: every output it reads is
declared, every comparison is between values of one type, `in` has a list or a map on its right, and
only numbers and strings are ordered. Seed types map to NUMBER, STRING, BOOLEAN, ARRAY<x>, MAP<k,v> or
ANY; an unknown type passes every check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarm.workflow.condition_syntax import Bool, Call, Cmp, Lit, Node, Not, Ref, render

__all__ = ["typecheck"]


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

    def report(self, node: Node, what: str) -> None:
        self.problems.append(f"{render(node)} at character {node.pos + 1}: {what}")

    def boolean(self, node: Node) -> None:
        t = self.static(node)
        if t.kind not in ("BOOLEAN", "ANY"):
            self.report(node, f"expected a true/false value, got {t}")

    def static(self, node: Node) -> _Ty:
        if isinstance(node, Lit):
            return _literal_type(node.value)
        if isinstance(node, Ref):
            return self.ref(node)
        if isinstance(node, Call):
            t = self.static(node.arg)
            if node.fn == "len" and t.kind in ("NUMBER", "BOOLEAN", "NULL"):
                self.report(node, f"len() of a {t} value")
            return _Ty("NUMBER") if node.fn == "len" else _Ty("BOOLEAN")
        if isinstance(node, Not):
            self.boolean(node.operand)
        elif isinstance(node, Bool):
            for item in node.items:
                self.boolean(item)
        elif isinstance(node, Cmp):
            self.compare(node)
        return _Ty("BOOLEAN")

    def ref(self, node: Ref) -> _Ty:
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

    def compare(self, node: Cmp) -> None:
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


def typecheck(node: Node, output_types: Mapping[str, str]) -> list[str]:
    """Static problems of a condition's tree given the parent's output types (name -> seed type)."""
    checker = _Checker(output_types)
    checker.boolean(node)
    return checker.problems
