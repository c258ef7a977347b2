"""A run of a DAG as a job of the task engine: one task per step (or per shard of a fanned-out step).

The job's id is the run's id (`dagId@...`; a cron slot's run id is fixed by its slot, so submitting it
twice never runs it twice). Each step's task waits for its parents' tasks and carries their edges as
`Inflow`s, so the coordinator decides run / skip / fail by `swarm.workflow.gate` and fills its inputs
from their outputs; retries, exactly-once commits and failover are the engine's own.

What a step becomes:

* runtime family -> task type: PYTHON `step.python`, SHELL `step.shell`, JVM `step.jvm`, SWARM the
  built-in task type its entrypoint names (`echo`, `sleep`, `python_eval`, ...), whose payload is the
  step's inputs; and the family is a placement requirement, so a step goes only where its runtime is.
  MAPREDUCE: the engine job's map, reduce and collecting tasks (`swarm.workflow.mrstep`), the last of
  which is the step's own task.
* `resourceRequirements` -> requirements: cores (rounded up), memory, disk, a GPU when gpuUnits > 0.
* `executionConfig.parallelism` p > 1 -> p tasks `<run>.<node>.<i>`, each given `shard` i of `shards` p;
  a downstream input mapped from such a step receives the list of the shards' values.
* `executionConfig.timeout` -> the task's timeout; `schedule.retryPolicy` (or the step's own
  `maxRetries`) -> exponential backoff from `retryInterval` by `backoffMultiplier`, capped at the last
  delay the policy can reach (never at the engine's 30 s default).
* run parameters: `name=value` sets input `name` of every step whose inputSchema declares it,
  `node.name=value` that of one step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from swarm.messages import PRIORITIES, Inflow, Requirements, RetryPolicy, SubmitJob, TaskSpec
from swarm.workflow import mrstep
from swarm.workflow.fields import DefinitionError
from swarm.workflow.model import DagDefinition, DagNode, runtime_family

__all__ = ["STEP_TYPES", "ArtifactRef", "RunRequest", "compile_run", "step_requirements", "step_task_ids"]

STEP_TYPES: dict[str, str] = {"PYTHON": "step.python", "SHELL": "step.shell", "JVM": "step.jvm"}


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """An artifact a step runs: its metadata (as JSON) and where peers can fetch it."""

    meta: dict[str, Any]
    sources: tuple[dict[str, str], ...]


@dataclass(frozen=True, slots=True)
class RunRequest:
    """Who starts which run of a definition, with which parameters."""

    run_id: str
    params: Mapping[str, Any]
    submitted_by: str = ""
    role: str = ""
    team: str = ""
    trigger: str = "manual"
    #: The capability token of the run's data on the data plane (large outputs between steps).
    data_token: str | None = None


def step_task_ids(run_id: str, node: DagNode, definition: DagDefinition) -> tuple[str, ...]:
    """Every task id of a step of `definition`: one, one per shard, or a MAPREDUCE step's maps, reduces
    and own task."""
    if node.task.family == "MAPREDUCE":
        return mrstep.step_task_ids(run_id, node.node_id, mrstep.settings(definition, node))
    return _output_task_ids(run_id, node)


def _output_task_ids(run_id: str, node: DagNode) -> tuple[str, ...]:
    """The tasks whose outputs are the step's: a MAPREDUCE step's own (collecting) task, or every shard."""
    if node.task.family == "MAPREDUCE":
        return (f"{run_id}.{node.node_id}",)
    p = node.execution.parallelism
    base = f"{run_id}.{node.node_id}"
    return (base,) if p <= 1 else tuple(f"{base}.{i}" for i in range(p))


def compile_run(
    definition: DagDefinition, run: RunRequest, resolve: Callable[[str], ArtifactRef]
) -> SubmitJob:
    """The job that runs `definition` once; `resolve` finds an artifact by its id (raising
    `DefinitionError` when it is unknown)."""
    order = definition.topological_order()
    params = _run_params(definition, run.params)
    tasks: list[TaskSpec] = []
    ids = {node_id: _output_task_ids(run.run_id, definition.node(node_id)) for node_id in order}
    for node_id in order:
        node = definition.node(node_id)
        family = runtime_family(node.task.runtime)
        base = _payload(definition, node, family, run.run_id, params.get(node_id, {}), resolve)
        if run.data_token is not None and family != "SWARM":
            base["dataToken"] = run.data_token
        inflows = tuple(
            Inflow(ids[edge.source], edge.condition, dict(edge.data_mapping))
            for edge in definition.parents(node_id)
        )
        after = tuple(task_id for flow in inflows for task_id in flow.sources)
        if family == "MAPREDUCE":
            template = _step_task(definition, node, ids[node_id][0], mrstep.COLLECT_TYPE, {}, after, inflows)
            tasks.extend(
                mrstep.expand(run.run_id, node_id, mrstep.settings(definition, node), template, base)
            )
            continue
        shards = ids[node_id]
        for i, task_id in enumerate(shards):
            payload = base if family == "SWARM" else {**base, "shard": i, "shards": len(shards)}
            task_type = _task_type(node, family)
            tasks.append(_step_task(definition, node, task_id, task_type, payload, after, inflows))
    return SubmitJob(
        run.run_id,
        tuple(tasks),
        kind="dag",
        submitted_by=run.submitted_by,
        role=run.role,
        team=run.team,
        meta={
            "dag": definition.dag_id,
            "version": definition.version,
            "trigger": run.trigger,
        },
    )


def _step_task(
    definition: DagDefinition,
    node: DagNode,
    task_id: str,
    task_type: str,
    payload: dict[str, Any],
    after: tuple[str, ...],
    inflows: tuple[Inflow, ...],
) -> TaskSpec:
    """One task of a step, with the step's priority, timeout, retries and requirements."""
    return TaskSpec(
        task_id=task_id,
        type=task_type,
        payload=payload,
        priority=PRIORITIES.index(node.priority),
        timeout=node.execution.timeout_s,
        retry=_retry(definition, node),
        requirements=_requirements(node, runtime_family(node.task.runtime)),
        after=after,
        inflows=inflows,
    )


def _task_type(node: DagNode, family: str) -> str:
    if family == "SWARM":
        if not node.task.entrypoint:
            raise DefinitionError(
                f"nodes[{node.node_id}].taskDefinition.entrypoint", "a SWARM step names its task type here"
            )
        return node.task.entrypoint
    return STEP_TYPES[family]


def _payload(
    definition: DagDefinition,
    node: DagNode,
    family: str,
    run_id: str,
    params: Mapping[str, Any],
    resolve: Callable[[str], ArtifactRef],
) -> dict[str, Any]:
    constants = {**node.task.params, **params}
    if family == "SWARM":
        return dict(constants)
    path = f"nodes[{node.node_id}].taskDefinition"
    if family == "MAPREDUCE":
        return _mapreduce_payload(node, run_id, constants, resolve, path)
    if not node.task.artifact_id:
        raise DefinitionError(f"{path}.artifactId", f"a {family} step runs code from an artifact")
    artifact = resolve(node.task.artifact_id)
    return {
        "run": run_id,
        "step": node.node_id,
        "entrypoint": _entrypoint(node, family, artifact, path),
        "artifact": artifact.meta,
        "sources": list(artifact.sources),
        "params": constants,
    }


def _mapreduce_payload(
    node: DagNode,
    run_id: str,
    constants: dict[str, Any],
    resolve: Callable[[str], ArtifactRef],
    path: str,
) -> dict[str, Any]:
    """A MAPREDUCE step runs the app of its artifact (a `mapreduce` artifact: one module), or, without
    one, the built-in app its entrypoint names."""
    payload: dict[str, Any] = {"run": run_id, "step": node.node_id, "params": constants}
    if node.task.artifact_id:
        artifact = resolve(node.task.artifact_id)
        if artifact.meta.get("kind") != "mapreduce":
            raise DefinitionError(
                f"{path}.artifactId",
                f"artifact {node.task.artifact_id} is a {artifact.meta.get('kind')} artifact, not a MapReduce"
                " app (push the app's module with --kind mapreduce)",
            )
        return {**payload, "entrypoint": "", "artifact": artifact.meta, "sources": list(artifact.sources)}
    app = node.task.entrypoint or node.task.class_name
    if not app or app not in mrstep.BUILTIN_APPS:
        raise DefinitionError(
            f"{path}.artifactId",
            "a MAPREDUCE step runs the app of an artifact, or a built-in app named by its entrypoint ("
            + ", ".join(mrstep.BUILTIN_APPS)
            + ")",
        )
    return {**payload, "entrypoint": app}


def _entrypoint(node: DagNode, family: str, artifact: ArtifactRef, path: str) -> str:
    entry = node.task.entrypoint or node.task.class_name
    if family == "SHELL":
        return entry or str(artifact.meta.get("filename", ""))
    if not entry:
        raise DefinitionError(f"{path}.entrypoint", f"a {family} step names its entry point")
    if family == "PYTHON" and ":" not in entry:
        module, _, function = entry.rpartition(".")
        if not module:
            raise DefinitionError(f"{path}.entrypoint", "a PYTHON entry point is 'module:function'")
        return f"{module}:{function}"
    return entry


def step_requirements(node: DagNode) -> Requirements:
    """Where a step's tasks may run, from its runtime and `resourceRequirements` (an allocation adds its
    constraints to these, see `swarm.workflow.allocation`)."""
    return _requirements(node, runtime_family(node.task.runtime))


def _requirements(node: DagNode, family: str) -> Requirements:
    res = node.resources
    return Requirements(
        min_cores=max(0, math.ceil(res.cpu_cores)) if res.cpu_cores > 1 else 0,
        min_memory_gb=res.memory_mb / 1024,
        min_storage_gb=res.disk_gb,
        gpu=True if res.gpu_units > 0 else None,
        runtime=family,
    )


def _retry(definition: DagDefinition, node: DagNode) -> RetryPolicy:
    policy = definition.schedule.retry_policy
    own = node.execution.max_retries
    if policy is None:
        return RetryPolicy() if own is None else RetryPolicy(max_retries=own)
    retries = policy.max_retries if own is None else own
    base = policy.retry_interval_s
    multiplier = max(1.0, policy.backoff_multiplier)
    return RetryPolicy(
        max_retries=retries,
        backoff="exponential",
        base=base,
        cap=base * multiplier ** max(retries - 1, 0),
        jitter=0.1,
        multiplier=multiplier,
    )


def _run_params(definition: DagDefinition, given: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Run parameters per step: `name` for every step that declares the input, `node.name` for one."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in given.items():
        node_id, dot, name = key.rpartition(".")
        if dot:
            if not definition.has_node(node_id):
                raise DefinitionError(f"params.{key}", f"no step {node_id!r}")
            out.setdefault(node_id, {})[name] = value
            continue
        takers = [n.node_id for n in definition.nodes if key in n.task.input_schema]
        if not takers:
            raise DefinitionError(f"params.{key}", "no step declares this input")
        for node_id in takers:
            out.setdefault(node_id, {})[key] = value
    return out
