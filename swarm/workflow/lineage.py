"""Lineage: how a step makes again an upstream output whose data died with the member that held it.

A step output larger than the inline limit lives on the data plane of the member that ran the step
(`swarm.plugins.step_data`), and the commit holds only a reference to it. The commit survives any
failover; the data does not survive its member. Re-running the upstream task through the scheduler
would commit a finished task twice, which the exactly-once job log forbids, so the consumer makes the
value again itself, as the MapReduce engine's reducers recompute a lost map: when the coordinator hands
out a step whose inputs hold references, it adds a *recipe* per reference (the upstream task's type,
its payload as it ran, and which output it was), and the consumer's runtime runs the recipe when the
reference cannot be fetched.

What a recipe covers: upstream steps of the PYTHON, SHELL and JVM runtimes whose own payload is small
(`MAX_RECIPE_BYTES`; their inputs travel inline in it). An upstream whose inputs were references in
turn is remade only if those are still reachable (one level of lineage). Steps are expected to be
deterministic, as a retry already assumes: a value made again may differ from the lost one only in what
the step itself varies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from swarm.messages import TaskSpec, TaskUpdate

__all__ = [
    "MAX_LINEAGE_BYTES",
    "MAX_RECIPE_BYTES",
    "RECOMPUTABLE",
    "REF_KEY",
    "RESOLVING",
    "is_reference",
    "recipes",
]

#: The key of a data-plane reference: `{"$ref": {"url": ..., "sha256": ..., "size": ...}}`.
REF_KEY = "$ref"
#: The runtimes whose tasks a consumer can run again from their payload alone.
RECOMPUTABLE = frozenset({"step.python", "step.shell", "step.jvm"})
#: The task types whose runtimes fetch the references among their inputs, and so can use recipes.
RESOLVING = RECOMPUTABLE | {"step.mapreduce.map", "step.mapreduce.reduce"}
#: An upstream payload larger than this is not carried (it would travel with every consumer's payload).
MAX_RECIPE_BYTES = 64 * 1024
#: At most this much lineage rides on one task's payload.
MAX_LINEAGE_BYTES = 256 * 1024


def is_reference(value: Any) -> bool:
    """Whether `value` is a data-plane reference (`{"$ref": {...}}`)."""
    return isinstance(value, dict) and set(value) == {REF_KEY} and isinstance(value[REF_KEY], dict)


def recipes(
    spec: TaskSpec,
    specs: Mapping[str, TaskSpec],
    committed: Mapping[str, TaskUpdate],
    payload_of: Callable[[TaskSpec], dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Per URL of a reference among the outputs `spec`'s edges map, how to make that value again:
    `{"task", "type", "output", "payload"}` of the upstream task that made it (`payload_of` gives the
    payload a task ran with). Empty for a step with no referenced inputs, or whose runtime does not
    fetch references."""
    made: dict[str, dict[str, Any]] = {}
    if spec.type not in RESOLVING:
        return made
    room = MAX_LINEAGE_BYTES
    for flow in spec.inflows:
        wanted = set(flow.mapping.values())
        for source in flow.sources:
            upstream, update = specs.get(source), committed.get(source)
            if upstream is None or update is None or upstream.type not in RECOMPUTABLE:
                continue
            outputs = update.result.get("outputs") if isinstance(update.result, dict) else None
            if not isinstance(outputs, dict):
                continue
            refs = {
                name: value[REF_KEY].get("url")
                for name, value in outputs.items()
                if name in wanted and is_reference(value)
            }
            if not refs:
                continue
            payload = payload_of(upstream)
            size = len(orjson.dumps(payload))
            if size > MAX_RECIPE_BYTES:
                continue
            for name, url in refs.items():
                if isinstance(url, str) and size <= room:
                    made[url] = {"task": source, "type": upstream.type, "output": name, "payload": payload}
                    room -= size
    return made
