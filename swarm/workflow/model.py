"""The DAG definition of seed 004 (`POST /api/v1/dag/define`) as frozen dataclasses, and back to the wire.

Wire names are camelCase, attributes snake_case. `swarm.workflow.definition_parser` builds these from
JSON or YAML, strictly; `DagDefinition.to_json` gives the seed's shape back, so that
`parse_definition(d.to_json()) == d`. Cycles are found by `DagDefinition.topological_order` (and
reported by `swarm.workflow.validate`), not by the parser, so that a cyclic draft can still be loaded and
shown. Seed fields the swarm accepts but does not act on are kept (`extras`, `not_applied`) so that
`to_json` gives them back.

Our additions to the seed: `schedule.catchup` (NONE | LATEST | ALL), `schedule.startAt` (ONCE),
`taskDefinition.entrypoint` (instead of `className`), `.standard` ("name@version" of a task standard),
`.params` (constant inputs), `executionConfig.maxRetries` (this node's override of
`schedule.retryPolicy.maxRetries`) and the node's `priority`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from swarm.workflow.durations import format_duration
from swarm.workflow.fields import DefinitionError, NotApplied

__all__ = [
    "DEFAULT_RETRY_INTERVAL_S",
    "RETENTION_POLICY",
    "Catchup",
    "DagDefinition",
    "DagNode",
    "Edge",
    "ExecutionConfig",
    "FieldSpec",
    "GlobalConfigs",
    "MapReduceConfig",
    "Position",
    "Resources",
    "RetryPolicy",
    "RuntimeFamily",
    "Schedule",
    "ScheduleType",
    "TaskDefinition",
    "is_version",
    "resources_json",
    "runtime_family",
    "schema_json",
]

RuntimeFamily = Literal["PYTHON", "SHELL", "JVM", "MAPREDUCE", "SWARM"]
ScheduleType = Literal["CRON", "ONCE", "MANUAL"]
Catchup = Literal["NONE", "LATEST", "ALL"]

#: The first retry delay when a retryPolicy gives none.
DEFAULT_RETRY_INTERVAL_S = 60.0
#: `globalConfigs.dataRetentionPolicy`: KEEP_<days>_DAYS.
RETENTION_POLICY = re.compile(r"KEEP_([1-9][0-9]{0,4})_DAYS")
_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
_RUNTIME = re.compile(r"([A-Za-z]+?)(?:[_-]?v?\d+(?:\.\d+)*)?")
_FAMILIES: dict[str, RuntimeFamily] = {
    "PYTHON": "PYTHON",
    "SHELL": "SHELL",
    "BASH": "SHELL",
    "SH": "SHELL",
    "JAVA": "JVM",
    "JVM": "JVM",
    "SCALA": "JVM",
    "KOTLIN": "JVM",
    "MAPREDUCE": "MAPREDUCE",
    "SWARM": "SWARM",
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Per-node default: `max_retries` more attempts, the first after `retry_interval_s`, then x factor."""

    max_retries: int = 0
    retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S
    backoff_multiplier: float = 1.0


@dataclass(frozen=True, slots=True)
class Schedule:
    """When runs start: a cron `expression` in `timezone`, once at `start_at` (RFC 3339), or on request."""

    type: ScheduleType = "MANUAL"
    expression: str | None = None
    timezone: str = "UTC"
    retry_policy: RetryPolicy | None = None
    catchup: Catchup = "LATEST"
    start_at: str | None = None


@dataclass(frozen=True, slots=True)
class Position:
    """Where the cockpit draws the node."""

    x: float
    y: float
    z: float = 0


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One input or output of a task: a seed type string (STRING, ARRAY<string>, ...) and its flags."""

    type: str
    required: bool = False
    has_default: bool = False
    default: Any = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class TaskDefinition:
    """What runs: `runtime` plus `class_name` or `entrypoint`, its typed interface and constant `params`.

    `output_schema` is None when the task declares none (its outputs are then unknown, not empty).
    """

    runtime: str
    artifact_id: str | None = None
    class_name: str | None = None
    entrypoint: str | None = None
    input_schema: Mapping[str, FieldSpec] = field(default_factory=dict)
    output_schema: Mapping[str, FieldSpec] | None = None
    standard: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> RuntimeFamily:
        """The runtime family (PYTHON, SHELL, JVM, MAPREDUCE, SWARM)."""
        return runtime_family(self.runtime)


@dataclass(frozen=True, slots=True)
class Resources:
    """What one task of the node needs; numbers keep the int/float type they were given in."""

    cpu_cores: float = 1
    memory_mb: float = 0
    disk_gb: float = 0
    gpu_units: int = 0
    network_bandwidth: str | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExecutionConfig:
    """How the node runs: timeout, how many parallel tasks, its MapReduce role, and a retry override."""

    timeout_s: float | None = None
    parallelism: int = 1
    is_map_stage: bool = False
    is_reduce_stage: bool = False
    partition_strategy: str | None = None
    memory_intensive: bool = False
    max_retries: int | None = None
    #: A MAPREDUCE step's reduce tasks (`reduceParallelism`; None: the mapReduceConfig default, else 1).
    reduce_parallelism: int | None = None


@dataclass(frozen=True, slots=True)
class DagNode:
    """One step of the DAG."""

    node_id: str
    task: TaskDefinition
    name: str = ""
    type: str = "TASK"
    position: Position | None = None
    resources: Resources = field(default_factory=Resources)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    priority: str = "normal"
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Edge:
    """`source` -> `target`; `data_mapping` maps a target INPUT name to a source OUTPUT name."""

    source: str
    target: str
    data_mapping: Mapping[str, str] = field(default_factory=dict)
    condition: str = "SUCCESS"


@dataclass(frozen=True, slots=True)
class GlobalConfigs:
    """DAG-wide settings; `data_retention_policy` is KEEP_<n>_DAYS."""

    default_resource_pool: str | None = None
    data_retention_policy: str | None = None
    notification_channels: tuple[str, ...] = ()
    observability_level: str | None = None

    @property
    def retention_days(self) -> int | None:
        """n of KEEP_<n>_DAYS, or None when no policy is given."""
        if self.data_retention_policy is None:
            return None
        match = RETENTION_POLICY.fullmatch(self.data_retention_policy)
        return int(match[1]) if match else None


@dataclass(frozen=True, slots=True)
class MapReduceConfig:
    """The seed's `mapReduceConfig`."""

    enabled: bool = False
    map_parallelism_default: int | None = None
    reduce_parallelism_default: int | None = None
    shuffle_strategy: str = "SORT_BASED"
    compression_enabled: bool = False
    spill_threshold_mb: int | None = None


@dataclass(frozen=True, slots=True)
class DagDefinition:
    """A whole DAG definition, with indexes by node id built once (lookups are O(1))."""

    dag_id: str
    version: str
    nodes: tuple[DagNode, ...]
    edges: tuple[Edge, ...] = ()
    name: str = ""
    description: str = ""
    schedule: Schedule = field(default_factory=Schedule)
    global_configs: GlobalConfigs = field(default_factory=GlobalConfigs)
    map_reduce: MapReduceConfig | None = None
    not_applied: tuple[NotApplied, ...] = ()
    _index: dict[str, DagNode] = field(init=False, repr=False, compare=False)
    _parents: dict[str, tuple[Edge, ...]] = field(init=False, repr=False, compare=False)
    _children: dict[str, tuple[Edge, ...]] = field(init=False, repr=False, compare=False)
    _order: list[tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {node.node_id: node for node in self.nodes}
        parents: dict[str, list[Edge]] = {}
        children: dict[str, list[Edge]] = {}
        for edge in self.edges:
            children.setdefault(edge.source, []).append(edge)
            parents.setdefault(edge.target, []).append(edge)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_parents", {key: tuple(value) for key, value in parents.items()})
        object.__setattr__(self, "_children", {key: tuple(value) for key, value in children.items()})
        object.__setattr__(self, "_order", [])

    def node(self, node_id: str) -> DagNode:
        """The node with this id (KeyError when there is none)."""
        return self._index[node_id]

    def has_node(self, node_id: str) -> bool:
        """Whether a node has this id."""
        return node_id in self._index

    def parents(self, node_id: str) -> tuple[Edge, ...]:
        """The edges into `node_id`, in definition order."""
        return self._parents.get(node_id, ())

    def children(self, node_id: str) -> tuple[Edge, ...]:
        """The edges out of `node_id`, in definition order."""
        return self._children.get(node_id, ())

    @property
    def retention_days(self) -> int | None:
        """Days to keep run data (KEEP_<n>_DAYS), None when unspecified."""
        return self.global_configs.retention_days

    def topological_order(self) -> tuple[str, ...]:
        """Node ids, each after all its parents (ties in definition order); DefinitionError on a cycle."""
        if self._order:
            return self._order[0]
        indegree = {node.node_id: len(self._parents.get(node.node_id, ())) for node in self.nodes}
        ready = [node.node_id for node in self.nodes if indegree[node.node_id] == 0]
        ready.reverse()
        order: list[str] = []
        while ready:
            current = ready.pop()
            order.append(current)
            # Reversed so that siblings come out of the stack in definition order.
            for edge in reversed(self._children.get(current, ())):
                indegree[edge.target] -= 1
                if indegree[edge.target] == 0:
                    ready.append(edge.target)
        if len(order) < len(self.nodes):
            cycle = self._find_cycle({key for key, value in indegree.items() if value > 0})
            raise DefinitionError("edges", "edges form a cycle: " + " -> ".join(cycle))
        self._order.append(tuple(order))
        return self._order[0]

    def _find_cycle(self, stuck: set[str]) -> list[str]:
        # Every stuck node has a stuck parent, so walking parents must come back to a node already seen.
        current = next(node.node_id for node in self.nodes if node.node_id in stuck)
        seen: dict[str, int] = {}
        walk: list[str] = []
        while current not in seen:
            seen[current] = len(walk)
            walk.append(current)
            current = next(e.source for e in self._parents[current] if e.source in stuck)
        loop = walk[seen[current] :]
        loop.reverse()
        return [*loop, loop[0]]

    def to_json(self) -> dict[str, Any]:
        """The seed's camelCase shape; `parse_definition(d.to_json()) == d`."""
        out: dict[str, Any] = {
            "dagId": self.dag_id,
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "schedule": _schedule_json(self.schedule),
            "nodes": [_node_json(node) for node in self.nodes],
            "edges": [_edge_json(edge) for edge in self.edges],
            "globalConfigs": _drop_none(
                {
                    "defaultResourcePool": self.global_configs.default_resource_pool,
                    "dataRetentionPolicy": self.global_configs.data_retention_policy,
                    "notificationChannels": list(self.global_configs.notification_channels),
                    "observabilityLevel": self.global_configs.observability_level,
                }
            ),
        }
        if self.map_reduce is not None:
            mr = self.map_reduce
            out["mapReduceConfig"] = _drop_none(
                {
                    "enabled": mr.enabled,
                    "mapParallelismDefault": mr.map_parallelism_default,
                    "reduceParallelismDefault": mr.reduce_parallelism_default,
                    "shuffleStrategy": mr.shuffle_strategy,
                    "compressionEnabled": mr.compression_enabled,
                    "spillThresholdMB": mr.spill_threshold_mb,
                }
            )
        return out


def is_version(text: str) -> bool:
    """Whether `text` is a semver-ish version: MAJOR.MINOR[.PATCH][-pre][+build]."""
    return isinstance(text, str) and _VERSION.fullmatch(text) is not None


def runtime_family(runtime: str, path: str = "runtime") -> RuntimeFamily:
    """PYTHON_3.9 -> PYTHON, BASH -> SHELL, JAVA_17 / SCALA_2.12 / KOTLIN -> JVM, MAPREDUCE, SWARM."""
    family = _family_of(runtime) if isinstance(runtime, str) else None
    if family is None:
        raise DefinitionError(
            path,
            f"unknown runtime {runtime!r}: expected PYTHON, SHELL (BASH, SH), JVM (JAVA, SCALA, KOTLIN),"
            " MAPREDUCE or SWARM, optionally with a version (PYTHON_3.11, JAVA_17)",
        )
    return family


@lru_cache(maxsize=256)
def _family_of(runtime: str) -> RuntimeFamily | None:
    # A definition names a few runtimes thousands of times (every step, and every check of its family).
    match = _RUNTIME.fullmatch(runtime.replace("MAP_REDUCE", "MAPREDUCE"))
    return _FAMILIES.get(match[1].upper()) if match else None


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}


def schema_json(schema: Mapping[str, FieldSpec]) -> dict[str, Any]:
    """An inputSchema/outputSchema back in its wire shape."""
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        entry: dict[str, Any] = {"type": spec.type}
        if spec.required:
            entry["required"] = True
        if spec.has_default:
            entry["default"] = spec.default
        if spec.description is not None:
            entry["description"] = spec.description
        out[key] = entry
    return out


def resources_json(res: Resources) -> dict[str, Any]:
    """A `Resources` back in the seed's `resourceRequirements` shape."""
    out = {"cpuCores": res.cpu_cores, "memoryMB": res.memory_mb, "diskGB": res.disk_gb}
    if res.gpu_units:
        out["gpuUnits"] = res.gpu_units
    return _drop_none({**out, "networkBandwidth": res.network_bandwidth, **res.extras})


def _schedule_json(s: Schedule) -> dict[str, Any]:
    out: dict[str, Any] = {"type": s.type, "expression": s.expression, "timezone": s.timezone}
    if s.retry_policy is not None:
        out["retryPolicy"] = {
            "maxRetries": s.retry_policy.max_retries,
            "retryInterval": format_duration(s.retry_policy.retry_interval_s),
            "backoffMultiplier": s.retry_policy.backoff_multiplier,
        }
    out["catchup"] = s.catchup
    out["startAt"] = s.start_at
    return _drop_none(out)


def _node_json(node: DagNode) -> dict[str, Any]:
    task = node.task
    task_out = _drop_none(
        {
            "artifactId": task.artifact_id,
            "className": task.class_name,
            "entrypoint": task.entrypoint,
            "runtime": task.runtime,
            "inputSchema": schema_json(task.input_schema),
            "outputSchema": None if task.output_schema is None else schema_json(task.output_schema),
            "standard": task.standard,
            "params": dict(task.params) or None,
            **task.extras,
        }
    )
    ex = node.execution
    execution = _drop_none(
        {
            "timeout": None if ex.timeout_s is None else format_duration(ex.timeout_s),
            "parallelism": ex.parallelism,
            "isMapStage": ex.is_map_stage or None,
            "isReduceStage": ex.is_reduce_stage or None,
            "partitionStrategy": ex.partition_strategy,
            "memoryIntensive": ex.memory_intensive or None,
            "maxRetries": ex.max_retries,
            "reduceParallelism": ex.reduce_parallelism,
        }
    )
    out: dict[str, Any] = {"nodeId": node.node_id, "name": node.name, "type": node.type}
    if node.position is not None:
        out["position"] = {"x": node.position.x, "y": node.position.y, "z": node.position.z}
    out |= {"taskDefinition": task_out, "resourceRequirements": resources_json(node.resources)}
    out |= {"executionConfig": execution, "priority": node.priority, **node.extras}
    return out


def _edge_json(edge: Edge) -> dict[str, Any]:
    return {
        "from": edge.source,
        "to": edge.target,
        "dataMapping": dict(edge.data_mapping),
        "condition": edge.condition,
    }
