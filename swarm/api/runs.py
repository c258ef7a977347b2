"""A workflow run as its job log tells it: task commits -> step executions and the run's final state.

Every node with an API follows each run it hears of (`RunStarted` on `wf/run/<id>`) through the run's job
log, the same retained commits a successor coordinator starts from, so every node's history database
ends with the same rows whichever node started the run or coordinated it.

The run's state: QUEUED until a coordinator accepts it, RUNNING until its job is finished, then FAILED
when a step failed (or was cancelled) with no edge leaving it that handles failure (FAILURE or ALWAYS),
CANCELLED when it was cancelled, SUCCESS otherwise: skipped steps and handled failures do not fail a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarm.messages import TaskUpdate
from swarm.workflow.model import DagDefinition

__all__ = ["final_run_state", "node_row", "step_of"]

_HANDLES_FAILURE = ("FAILURE", "ALWAYS")


def step_of(definition: DagDefinition, run_id: str, task_id: str) -> tuple[str, int]:
    """The step (node id) and shard a task of the run is."""
    local = task_id.removeprefix(f"{run_id}.")
    if definition.has_node(local):
        return local, 0
    node_id, _, shard = local.rpartition(".")
    if definition.has_node(node_id) and shard.isdigit():
        return node_id, int(shard)
    return local, 0


def node_row(definition: DagDefinition, run_id: str, update: TaskUpdate) -> dict[str, Any]:
    """One step execution for the history store, from a task's final commit."""
    node_id, shard = step_of(definition, run_id, update.task_id)
    result: dict[str, Any] = update.result if isinstance(update.result, dict) else {}
    raw_usage = result.get("usage")
    usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
    outputs = result.get("outputs", update.result)
    return {
        "run_id": run_id,
        "node_id": node_id,
        "shard": shard,
        "state": update.state,
        "attempt": update.attempt,
        "device": update.node,
        "started_at": update.started_at,
        "finished_at": update.finished_at,
        "error": update.error,
        "cpu_s": float(usage.get("cpuS", 0.0)),
        "peak_memory_mb": float(usage.get("peakMemoryMB", 0.0)),
        "output_size": int(usage.get("outputBytes", 0)),
        "bytes_in": int(usage.get("bytesIn", 0)),
        "bytes_out": int(usage.get("bytesOut", 0)),
        "output": outputs,
        "log_tail": str(result.get("log", "")),
    }


def final_run_state(definition: DagDefinition, states: Mapping[str, str], cancelled: bool) -> str:
    """SUCCESS, FAILED or CANCELLED from the final states of the run's steps (see the module doc)."""
    if cancelled:
        return "CANCELLED"
    for node_id, state in states.items():
        if state not in ("failed", "cancelled"):
            continue
        handled = any(
            edge.condition.split()[0].upper() in _HANDLES_FAILURE for edge in definition.children(node_id)
        )
        if not handled:
            return "FAILED"
    return "SUCCESS"
