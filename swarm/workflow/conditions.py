"""Edge conditions: a tiny typed expression language over a parent's final state and outputs.

Theory of operation
-------------------
An edge's condition (default SUCCESS) says when its target may run, given the parent's final state and
outputs, e.g. `SUCCESS AND output.rows > 100 AND output.region in ["EU", "US"]`. Its text is parsed once
(`swarm.workflow.condition_syntax`: the grammar, never Python's `eval`), compiled once into closures
(`swarm.workflow.condition_eval`: three-valued logic, so a missing output or a type mismatch never makes
an edge fire, and evaluation never raises for data) and checked against the parent's declared outputs at
define time (`swarm.workflow.condition_types`). A `Condition` is the three together, compared and hashed
by its canonical text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarm.workflow.condition_eval import PARENT_STATES, compile_condition
from swarm.workflow.condition_syntax import Node, Ref, parse_tree, render, walk
from swarm.workflow.condition_types import typecheck

__all__ = ["Condition", "parse_condition"]


class Condition:
    """A parsed, compiled edge condition; immutable, compared and hashed by its canonical text."""

    __slots__ = ("_fn", "_tree", "outputs_referenced", "text")

    def __init__(self, node: Node) -> None:
        self._tree = node
        self._fn = compile_condition(node)
        self.outputs_referenced: frozenset[str] = frozenset(n.name for n in walk(node) if isinstance(n, Ref))
        self.text: str = render(node)

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
        return typecheck(self._tree, output_types)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"


def parse_condition(text: str) -> Condition:
    """Parse and compile an edge condition; raises ConditionError naming the problem and its character."""
    return Condition(parse_tree(text))
