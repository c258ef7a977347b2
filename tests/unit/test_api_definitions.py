"""Parsed definitions kept by version: parsed once, parsed again when the stored body changed."""

from __future__ import annotations

from typing import Any

from swarm.api.definitions import ParsedDefinitions
from swarm.workflow.definition_parser import parse_definition


def _record(dag_id: str, version: str, created_at: float, step: str = "a") -> dict[str, Any]:
    body = {
        "dagId": dag_id,
        "version": version,
        "nodes": [{"nodeId": step, "taskDefinition": {"runtime": "SWARM", "entrypoint": "echo"}}],
    }
    return {"version": version, "createdAt": created_at, "createdBy": "u", "definition": body}


def test_a_version_is_parsed_once_and_again_when_its_body_was_settled_anew() -> None:
    cache = ParsedDefinitions(capacity=2)
    first = cache.of(_record("d", "1.0.0", 1.0))
    assert cache.of(_record("d", "1.0.0", 1.0)) is first
    # Two concurrent defines of one version: the history keeps the later body, with its own time.
    settled = cache.of(_record("d", "1.0.0", 2.0, step="b"))
    assert [n.node_id for n in settled.nodes] == ["b"]
    assert [n.node_id for n in first.nodes] == ["a"]


def test_a_definition_parsed_at_define_time_serves_its_stored_record() -> None:
    cache = ParsedDefinitions()
    record = _record("d", "1.0.0", 5.0)
    defined = parse_definition(record["definition"])
    cache.keep(defined, 5.0, "u")
    assert cache.of(record) is defined
