"""Parsed DAG definitions, kept by version for the node's API.

A run start, every node's following of a run, an allocation and the analytics each need the parsed
definition of a stored version, and parsing a 1,000-step definition takes tens of milliseconds on the
event loop. A version's body is immutable once defined, except when two nodes define it concurrently
with different bodies and the history settles on the later: a version is therefore kept under its
creation time and creator too, so a settled body is parsed afresh.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from swarm.workflow.definition_parser import parse_definition
from swarm.workflow.model import DagDefinition

__all__ = ["ParsedDefinitions"]

#: Versions kept parsed: the DAGs a node runs at once are few.
CAPACITY = 32


class ParsedDefinitions:
    """The parsed definitions of the last `capacity` versions used."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._parsed: OrderedDict[tuple[Any, ...], DagDefinition] = OrderedDict()

    def of(self, record: dict[str, Any]) -> DagDefinition:
        """The definition of a stored version (`History.definition`'s record), parsed once."""
        body = record["definition"]
        key = (body.get("dagId"), record["version"], record["createdAt"], record["createdBy"])
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = parse_definition(body)
            self._keep(key, parsed)
        else:
            self._parsed.move_to_end(key)
        return parsed

    def keep(self, definition: DagDefinition, created_at: float, created_by: str) -> None:
        """Keep a definition this node has just parsed and stored with that creation time and creator."""
        self._keep((definition.dag_id, definition.version, created_at, created_by), definition)

    def _keep(self, key: tuple[Any, ...], definition: DagDefinition) -> None:
        self._parsed[key] = definition
        while len(self._parsed) > self._capacity:
            self._parsed.popitem(last=False)
