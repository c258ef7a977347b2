"""Parsed definitions kept by version: parsed once, parsed again when the stored body changed."""

from __future__ import annotations

from typing import Any

from swarm.api.definitions import ParsedDefinitions


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


def test_only_the_last_versions_used_are_kept() -> None:
    cache = ParsedDefinitions(capacity=2)
    a = cache.of(_record("d", "1.0.0", 1.0))
    b = cache.of(_record("d", "2.0.0", 1.0))
    assert cache.of(_record("d", "1.0.0", 1.0)) is a  # used again: the newest now
    cache.of(_record("d", "3.0.0", 1.0))  # 2.0.0 leaves
    assert cache.of(_record("d", "1.0.0", 1.0)) is a
    assert cache.of(_record("d", "2.0.0", 1.0)) is not b
