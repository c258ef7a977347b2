"""The join rule of a workflow step: once every predecessor is final, run it, skip it, or fail it.

A step runs iff the condition of every incoming edge holds. Otherwise it fails when an edge that does
not hold comes from an upstream that failed or was cancelled (the failure travels on, as Airflow's
`upstream_failed` does), and is skipped when every edge that does not hold comes from a skipped upstream
or a false expression. The table, per edge (rows: the upstream's state; columns: the edge's condition;
an expression `AND ...` must also hold):

    upstream    SUCCESS   FAILURE   ALWAYS   SKIPPED
    done        holds     -         holds    -
    failed      - (fail)  holds     holds    - (fail)
    cancelled   - (fail)  holds     holds    - (fail)
    skipped     - (skip)  - (skip)  holds    holds

An upstream fanned out over several tasks is done when all of them are, failed when any failed (else
cancelled when any was), and skipped when all were skipped.

Pure functions of the committed states: the coordinator and a successor that adopts the job decide the
same way, and the simulator checks a run against a sequential evaluation of the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal

from swarm.messages import Inflow, TaskSpec, TaskUpdate
from swarm.workflow.conditions import Condition, parse_condition

__all__ = ["Verdict", "combined_state", "decide", "step_inputs", "upstream_outputs"]

Verdict = Literal["run", "skipped", "failed"]


@lru_cache(maxsize=4096)
def _condition(text: str) -> Condition:
    # A run evaluates the same few edge texts many times; parsing is pure, so one parse serves all.
    return parse_condition(text)


def combined_state(states: list[str]) -> str:
    """The state of an upstream step from the final states of its tasks (shards)."""
    if all(s == "done" for s in states):
        return "done"
    if "failed" in states:
        return "failed"
    if "cancelled" in states:
        return "cancelled"
    if all(s == "skipped" for s in states):
        return "skipped"
    # Some shards done, the others skipped (a modified run): the step counts as done with fewer outputs.
    return "done"


def upstream_outputs(flow: Inflow, committed: Mapping[str, TaskUpdate]) -> dict[str, Any]:
    """The outputs an edge sees: the upstream's output mapping, or for a fanned-out upstream, each output
    name with the list of its shards' values (in shard order)."""
    shards = [_outputs_of(committed[source]) for source in flow.sources]
    if len(shards) == 1:
        return shards[0]
    names = sorted({name for shard in shards for name in shard})
    return {name: [shard.get(name) for shard in shards] for name in names}


def _outputs_of(update: TaskUpdate) -> dict[str, Any]:
    """A runtime step's `outputs`; a built-in task's result mapping itself, or `{"result": value}`."""
    result = update.result
    if update.state != "done" or result is None:
        return {}
    if isinstance(result, dict):
        outputs = result.get("outputs")
        return outputs if isinstance(outputs, dict) else result
    return {"result": result}


def decide(spec: TaskSpec, committed: Mapping[str, TaskUpdate]) -> tuple[Verdict, str]:
    """Whether `spec` runs, is skipped or fails, with the reason; every source must be committed."""
    skip_reason = ""
    for flow in spec.inflows:
        state = combined_state([committed[s].state for s in flow.sources])
        condition = _condition(flow.condition)
        if condition.evaluate(state, upstream_outputs(flow, committed) if state == "done" else {}):
            continue
        upstream = _step_of(flow)
        if state in ("failed", "cancelled"):
            return "failed", f"upstream {upstream} {state} (edge condition {condition.text})"
        skip_reason = skip_reason or f"edge from {upstream} ({state}): condition {condition.text} is false"
    if skip_reason:
        return "skipped", skip_reason
    return "run", "conditions hold"


def _step_of(flow: Inflow) -> str:
    first = flow.sources[0]
    return first if len(flow.sources) == 1 else first.rsplit(".", 1)[0]


def step_inputs(spec: TaskSpec, committed: Mapping[str, TaskUpdate]) -> dict[str, Any]:
    """The payload a step runs with. A runtime step (`step.*`) gets `inputs`: its constant `params`
    overlaid by the values its edges map from upstream outputs (a missing output maps to None); a
    built-in task type gets those values as fields of its own payload."""
    mapped: dict[str, Any] = {}
    for flow in spec.inflows:
        if flow.mapping:
            outputs = upstream_outputs(flow, committed)
            for name, output in flow.mapping.items():
                mapped[name] = outputs.get(output)
    if not spec.type.startswith("step."):
        return {**spec.payload, **mapped}
    return {**spec.payload, "inputs": {**(spec.payload.get("params") or {}), **mapped}}
