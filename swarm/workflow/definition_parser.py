"""Seed 004's DAG definition from JSON (strict: no comments), YAML or a decoded value, parsed strictly.

Parsing refuses wrong types, missing required fields, unknown keys, bad ids, duplicate nodes and edges
that name unknown nodes, always naming the exact field (`nodes[2].executionConfig.timeout: ...`). YAML
aliases may not expand a small text into a huge tree.

Seed fields that mean nothing on a swarm of devices are accepted but never silently dropped: each one
becomes a `NotApplied(path, reason)` on `DagDefinition.not_applied`, and is kept so that `to_json`
gives it back. Besides the seed's own fields, these seed keys (from its allocation request) are accepted
as not applied: `containerImage` on a node, its `taskDefinition` or its `resourceRequirements`, and
`resourceProfile`, `gpuType`, `networkPriority`, `environmentVariables` in `resourceRequirements`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, cast

import orjson
import yaml

from swarm.ids import is_id
from swarm.messages import PRIORITIES
from swarm.workflow.fields import (
    DefinitionError,
    FieldReader,
    NotApplied,
    check_json_value,
    describe,
    expect_object,
    open_object,
)
from swarm.workflow.model import (
    DEFAULT_RETRY_INTERVAL_S,
    RETENTION_POLICY,
    Catchup,
    DagDefinition,
    DagNode,
    Edge,
    ExecutionConfig,
    FieldSpec,
    GlobalConfigs,
    MapReduceConfig,
    Position,
    Resources,
    RetryPolicy,
    Schedule,
    ScheduleType,
    TaskDefinition,
    is_version,
    runtime_family,
)

__all__ = [
    "MAX_DEFINITION_BYTES",
    "load_definition",
    "parse_definition",
    "parse_resources",
    "parse_schema",
    "schedule_of",
]

#: Largest definition text `load_definition` accepts.
MAX_DEFINITION_BYTES = 8 * 1024 * 1024
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_<>, ]{0,127}")

_CONTAINER = "swarm runs a task in its member's own runtime, never in a container image"
_NODE_IGNORED = {"containerImage": _CONTAINER}
_TASK_IGNORED = {"containerImage": _CONTAINER}
_RESOURCE_IGNORED = {
    "containerImage": _CONTAINER,
    "resourceProfile": "members are chosen by the resources asked for, not by a profile name",
    "gpuType": "members report whether they have a GPU, not its model",
    "networkPriority": "the swarm has no network QoS",
    "environmentVariables": "tasks get their inputs as parameters, not as environment variables",
}


def load_definition(text: str, fmt: Literal["json", "yaml"]) -> DagDefinition:
    """Parse a definition from JSON (strict: no comments) or YAML text of at most 8 MiB."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_DEFINITION_BYTES:
        raise DefinitionError("definition", f"{size} bytes is more than the {MAX_DEFINITION_BYTES} allowed")
    if fmt == "json":
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            where = f"line {exc.lineno} column {exc.colno}"
            if text[exc.pos : exc.pos + 2] in ("//", "/*"):
                raise DefinitionError(
                    "definition",
                    f"JSON has no comments ({where}); remove them, or write YAML with # comments",
                ) from None
            raise DefinitionError("definition", f"invalid JSON at {where}: {exc.msg}") from None
    elif fmt == "yaml":
        data = _load_yaml(text)
    else:
        raise DefinitionError("definition", f"format must be json or yaml, got {fmt!r}")
    return parse_definition(data)


#: Most YAML nodes a document may expand to: aliases may not multiply a small text into a huge tree.
_MAX_YAML_NODES = 2_000_000


def _load_yaml(text: str) -> object:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        sizes: dict[int, int] = {}
        if _yaml_size(root, sizes) > _MAX_YAML_NODES:
            raise DefinitionError("definition", "YAML aliases expand to more than 2,000,000 values")
        return loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise DefinitionError("definition", f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _yaml_size(root: yaml.Node, sizes: dict[int, int]) -> int:
    """The number of values `root` expands to, each shared (aliased) node counted once per use."""
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        kids: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            kids = [item for pair in node.value for item in pair]
        if done:
            sizes[id(node)] = min(1 + sum(sizes[id(kid)] for kid in kids), _MAX_YAML_NODES + 1)
        else:
            stack.append((node, True))
            stack.extend((kid, False) for kid in kids if id(kid) not in sizes)
    return sizes[id(root)]


_TOP_KEYS = tuple("dagId name description version schedule nodes edges globalConfigs mapReduceConfig".split())  # noqa: SIM905


def parse_definition(data: object) -> DagDefinition:
    """A `DagDefinition` from the seed's camelCase JSON value; DefinitionError naming the field if invalid."""
    notes: list[NotApplied] = []
    r, _ = open_object(data, "", _TOP_KEYS)
    dag_id = _id(r, "dagId")
    version = r.req_str("version")
    if not is_version(version):
        raise DefinitionError(
            "version", f"expected MAJOR.MINOR or MAJOR.MINOR.PATCH like 3.2.1, got {version!r}"
        )
    schedule = schedule_of(r.data)
    map_reduce = _parse_map_reduce(r.data.get("mapReduceConfig"), "mapReduceConfig", notes)
    raw_nodes = r.data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise DefinitionError("nodes", f"expected a non-empty array of nodes, got {describe(raw_nodes)}")
    nodes: list[DagNode] = []
    where: dict[str, int] = {}
    for i, raw in enumerate(raw_nodes):
        node = _parse_node(raw, f"nodes[{i}]", notes, map_reduce)
        if node.node_id in where:
            raise DefinitionError(
                f"nodes[{i}].nodeId", f"{node.node_id!r} is also nodes[{where[node.node_id]}]"
            )
        where[node.node_id] = i
        nodes.append(node)
    if map_reduce is not None:
        notes.extend(_map_reduce_notes(map_reduce, nodes))
    edges = _parse_edges(r.data.get("edges"), where)
    configs = _parse_globals(r.data.get("globalConfigs"), "globalConfigs", notes)
    return DagDefinition(
        dag_id=dag_id,
        version=version,
        nodes=tuple(nodes),
        edges=edges,
        name=r.opt_str("name") or dag_id,
        description=_text(r, "description"),
        schedule=schedule,
        global_configs=configs,
        map_reduce=map_reduce,
        not_applied=tuple(notes),
    )


def schedule_of(data: Mapping[str, Any]) -> Schedule:
    """The `schedule` of a definition document, parsed alone: what a node needs of every version it
    learns (parsing a whole 1,000-step definition for it took a third of a define's time)."""
    value = data.get("schedule")
    return Schedule() if value is None else _parse_schedule(value, "schedule")


def _id(r: FieldReader, key: str) -> str:
    value = r.req_str(key)
    if not is_id(value):
        raise DefinitionError(
            r.at(key), f"{value!r} is not a valid id: letters, digits and _ . : = @ -, starting with a letter"
        )
    return value


def _text(r: FieldReader, key: str) -> str:
    value = r.data.get(key, "")
    if not isinstance(value, str):
        raise DefinitionError(r.at(key), f"expected a string, got {describe(value)}")
    return value


def _name(value: object, path: str, what: str) -> str:
    if not isinstance(value, str) or not _FIELD_NAME.fullmatch(value):
        raise DefinitionError(path, f"{what} must be an identifier (letters, digits, _), got {value!r}")
    return value


def _or_default(value: float | None, default: float) -> float:
    return default if value is None else value


def _parse_schedule(value: object, path: str) -> Schedule:
    r, _ = open_object(value, path, ("type", "expression", "timezone", "retryPolicy", "catchup", "startAt"))
    kind = cast(ScheduleType, r.choice("type", ("CRON", "ONCE", "MANUAL"), "MANUAL"))
    expression = r.opt_str("expression")
    start_at = r.opt_str("startAt")
    if kind == "CRON" and expression is None:
        raise DefinitionError(r.at("expression"), "required for a CRON schedule (e.g. '0 2 * * *')")
    if kind != "CRON" and expression is not None:
        raise DefinitionError(
            r.at("expression"), f"only a CRON schedule has an expression, this one is {kind}"
        )
    if kind == "ONCE" and start_at is None:
        raise DefinitionError(r.at("startAt"), "required for a ONCE schedule (e.g. '2024-05-01T02:00:00Z')")
    if kind != "ONCE" and start_at is not None:
        raise DefinitionError(r.at("startAt"), f"only a ONCE schedule has startAt, this one is {kind}")
    if start_at is not None:
        try:
            moment = datetime.fromisoformat(start_at)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise DefinitionError(
                r.at("startAt"), f"expected an RFC 3339 time with an offset, got {start_at!r}"
            )
    retry = None
    if r.data.get("retryPolicy") is not None:
        rp, _ = open_object(r.data["retryPolicy"], r.at("retryPolicy"), _RETRY_KEYS)
        retry = RetryPolicy(
            max_retries=rp.integer("maxRetries", 0),
            retry_interval_s=_or_default(rp.duration("retryInterval"), DEFAULT_RETRY_INTERVAL_S),
            backoff_multiplier=rp.number("backoffMultiplier", 1.0, minimum=1),
        )
    return Schedule(
        type=kind,
        expression=expression,
        timezone=r.opt_str("timezone") or "UTC",
        retry_policy=retry,
        catchup=cast(Catchup, r.choice("catchup", ("NONE", "LATEST", "ALL"), "LATEST")),
        start_at=start_at,
    )


_RETRY_KEYS = ("maxRetries", "retryInterval", "backoffMultiplier")
_NODE_KEYS = tuple(
    "nodeId name type position taskDefinition resourceRequirements executionConfig priority".split()  # noqa: SIM905
)
_TASK_KEYS = tuple("artifactId className entrypoint runtime inputSchema outputSchema standard params".split())  # noqa: SIM905
_EXEC_KEYS = (
    *"timeout parallelism isMapStage isReduceStage partitionStrategy memoryIntensive maxRetries".split(),  # noqa: SIM905
    "reduceParallelism",
)
_STANDARD_REF = re.compile(r"(?P<name>[^@]+)@(?P<version>.+)")


def _parse_node(value: object, path: str, notes: list[NotApplied], mr: MapReduceConfig | None) -> DagNode:
    r, extras = open_object(value, path, _NODE_KEYS, notes, _NODE_IGNORED)
    node_id = _id(r, "nodeId")
    if r.data.get("taskDefinition") is None:
        raise DefinitionError(r.at("taskDefinition"), "required")
    position = None
    if r.data.get("position") is not None:
        p, _ = open_object(r.data["position"], r.at("position"), ("x", "y", "z"))
        low = float("-inf")
        position = Position(p.number("x", 0, low), p.number("y", 0, low), p.number("z", 0, low))
    task = _parse_task(r.data["taskDefinition"], r.at("taskDefinition"), notes)
    resources = parse_resources(r.data.get("resourceRequirements", {}), r.at("resourceRequirements"), notes)
    execution = _parse_execution(
        r.data.get("executionConfig", {}), r.at("executionConfig"), notes, mr, task.family == "MAPREDUCE"
    )
    return DagNode(
        node_id=node_id,
        task=task,
        name=r.opt_str("name") or node_id,
        type=r.opt_str("type") or "TASK",
        position=position,
        resources=resources,
        execution=execution,
        priority=r.choice("priority", PRIORITIES, "normal"),
        extras=extras,
    )


def _parse_task(value: object, path: str, notes: list[NotApplied]) -> TaskDefinition:
    r, extras = open_object(value, path, _TASK_KEYS, notes, _TASK_IGNORED)
    runtime = r.req_str("runtime")
    family = runtime_family(runtime, r.at("runtime"))
    class_name, entrypoint = r.opt_str("className"), r.opt_str("entrypoint")
    if class_name is not None and entrypoint is not None:
        raise DefinitionError(r.at("entrypoint"), "give className or entrypoint, not both")
    if family == "SWARM" and (entrypoint is None or not is_id(entrypoint)):
        raise DefinitionError(
            r.at("entrypoint"), "a SWARM task names its built-in task type here (e.g. 'echo')"
        )
    artifact = _id(r, "artifactId") if r.data.get("artifactId") is not None else None
    standard = r.opt_str("standard")
    if standard is not None:
        match = _STANDARD_REF.fullmatch(standard)
        if match is None or not is_id(match["name"]) or not is_version(match["version"]):
            raise DefinitionError(
                r.at("standard"), f"expected name@version like etl-extract@1.0, got {standard!r}"
            )
    params = _object_of(r, "params")
    for key, inner in params.items():
        _name(key, r.at(f"params.{key}"), "a parameter name")
        check_json_value(inner, r.at(f"params.{key}"))
    output = r.data.get("outputSchema")
    return TaskDefinition(
        runtime=runtime,
        artifact_id=artifact,
        class_name=class_name,
        entrypoint=entrypoint,
        input_schema=parse_schema(r.data.get("inputSchema", {}), r.at("inputSchema")),
        output_schema=None if output is None else parse_schema(output, r.at("outputSchema")),
        standard=standard,
        params=params,
        extras=extras,
    )


def _object_of(r: FieldReader, key: str) -> dict[str, Any]:
    value = r.data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DefinitionError(r.at(key), f"expected an object, got {describe(value)}")
    return value


def parse_schema(value: object, path: str) -> dict[str, FieldSpec]:
    """An inputSchema/outputSchema: `{name: {"type", "required"?, "default"?, "description"?}}`."""
    r = FieldReader(expect_object(value, path), path)
    fields: dict[str, FieldSpec] = {}
    for key, raw in r.data.items():
        where = r.at(key)
        if not _FIELD_NAME.fullmatch(key):
            _name(key, where, "a field name")
        f, _ = open_object(raw, where, ("type", "required", "default", "description"))
        type_name = f.req_str("type")
        if not _TYPE_NAME.fullmatch(type_name) or type_name.count("<") != type_name.count(">"):
            raise DefinitionError(
                f.at("type"), f"expected a type like STRING or ARRAY<string>, got {type_name!r}"
            )
        if "default" in f.data:
            check_json_value(f.data["default"], f.at("default"))
        fields[key] = FieldSpec(
            type=type_name,
            required=f.flag("required"),
            has_default="default" in f.data,
            default=f.data.get("default"),
            description=f.opt_str("description"),
        )
    return fields


def parse_resources(value: object, path: str, notes: list[NotApplied]) -> Resources:
    """A node's `resourceRequirements`; unlisted numbers take their defaults (1 core, nothing else)."""
    r, extras = open_object(value, path, _RESOURCE_KEYS, notes, _RESOURCE_IGNORED)
    bandwidth = r.opt_str("networkBandwidth")
    if bandwidth is not None:
        notes.append(NotApplied(r.at("networkBandwidth"), "the swarm does not reserve network bandwidth"))
    return Resources(
        cpu_cores=r.number("cpuCores", 1),
        memory_mb=r.number("memoryMB", 0),
        disk_gb=r.number("diskGB", 0),
        gpu_units=r.integer("gpuUnits", 0),
        network_bandwidth=bandwidth,
        extras=extras,
    )


_RESOURCE_KEYS = ("cpuCores", "memoryMB", "diskGB", "gpuUnits", "networkBandwidth")


def _parse_execution(
    value: object, path: str, notes: list[NotApplied], mr: MapReduceConfig | None, job_step: bool = False
) -> ExecutionConfig:
    """A node's `executionConfig`. On a MAPREDUCE step (`job_step`) `parallelism` is its map tasks, with
    `mapParallelismDefault` as the default, and `reduceParallelism` its reduce tasks."""
    r, _ = open_object(value, path, _EXEC_KEYS)
    timeout = r.duration("timeout")
    if timeout is not None and timeout <= 0:
        raise DefinitionError(r.at("timeout"), "must be longer than zero")
    is_map, is_reduce = r.flag("isMapStage"), r.flag("isReduceStage")
    if is_map and is_reduce:
        raise DefinitionError(r.at("isReduceStage"), "a node is a map stage or a reduce stage, not both")
    if job_step and (is_map or is_reduce):
        flag = r.at("isMapStage" if is_map else "isReduceStage")
        notes.append(NotApplied(flag, "a MAPREDUCE step runs both stages of its job"))
    default = 1
    if mr is not None and mr.enabled:
        stage_default = (
            mr.map_parallelism_default
            if is_map or job_step
            else mr.reduce_parallelism_default
            if is_reduce
            else None
        )
        default = stage_default or 1
    strategy = r.opt_str("partitionStrategy")
    if strategy is not None and job_step:
        notes.append(NotApplied(r.at("partitionStrategy"), "a MAPREDUCE step partitions as its app does"))
    elif strategy is not None and not (mr is not None and mr.enabled and (is_map or is_reduce)):
        notes.append(NotApplied(r.at("partitionStrategy"), "partitioning applies only to MapReduce stages"))
    reduces = r.opt_int("reduceParallelism", minimum=1)
    if reduces is not None and not job_step:
        raise DefinitionError(r.at("reduceParallelism"), "only a MAPREDUCE step has reduce tasks of its own")
    return ExecutionConfig(
        timeout_s=timeout,
        parallelism=r.integer("parallelism", default, minimum=1),
        is_map_stage=is_map,
        is_reduce_stage=is_reduce,
        partition_strategy=strategy,
        memory_intensive=r.flag("memoryIntensive"),
        max_retries=r.opt_int("maxRetries"),
        reduce_parallelism=reduces,
    )


def _parse_edges(value: object, where: Mapping[str, int]) -> tuple[Edge, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise DefinitionError("edges", f"expected an array, got {describe(value)}")
    edges: list[Edge] = []
    pairs: dict[tuple[str, str], int] = {}
    for i, raw in enumerate(value):
        r, _ = open_object(raw, f"edges[{i}]", ("from", "to", "dataMapping", "condition"))
        ends = []
        for key in ("from", "to"):
            end = r.req_str(key)
            if end not in where:
                raise DefinitionError(r.at(key), f"no node has the id {end!r}")
            ends.append(end)
        if (ends[0], ends[1]) in pairs:
            raise DefinitionError(
                f"edges[{i}]",
                f"a second edge {ends[0]} -> {ends[1]} (edges[{pairs[ends[0], ends[1]]}]); merge them",
            )
        pairs[ends[0], ends[1]] = i
        mapping = _object_of(r, "dataMapping")
        for key, inner in mapping.items():
            if not (_FIELD_NAME.fullmatch(key) and isinstance(inner, str) and _FIELD_NAME.fullmatch(inner)):
                _name(key, r.at(f"dataMapping.{key}"), "an input name")
                _name(inner, r.at(f"dataMapping.{key}"), "an output name")
        edges.append(Edge(ends[0], ends[1], mapping, r.opt_str("condition") or "SUCCESS"))
    return tuple(edges)


_GLOBAL_KEYS = ("defaultResourcePool", "dataRetentionPolicy", "notificationChannels", "observabilityLevel")


def _parse_globals(value: object, path: str, notes: list[NotApplied]) -> GlobalConfigs:
    if value is None:
        return GlobalConfigs()
    r, _ = open_object(value, path, _GLOBAL_KEYS)
    pool, level = r.opt_str("defaultResourcePool"), r.opt_str("observabilityLevel")
    retention = r.opt_str("dataRetentionPolicy")
    if retention is not None and not RETENTION_POLICY.fullmatch(retention):
        raise DefinitionError(r.at("dataRetentionPolicy"), f"expected KEEP_<days>_DAYS, got {retention!r}")
    channels = r.data.get("notificationChannels", [])
    if not isinstance(channels, list) or not all(isinstance(c, str) and c for c in channels):
        raise DefinitionError(r.at("notificationChannels"), "expected an array of channel names")
    if pool is not None:
        notes.append(NotApplied(r.at("defaultResourcePool"), "the swarm has one pool: every member"))
    if channels:
        notes.append(
            NotApplied(
                r.at("notificationChannels"), "no notification transport; events go to the WebSocket stream"
            )
        )
    if level is not None:
        notes.append(NotApplied(r.at("observabilityLevel"), "every run records the same events and metrics"))
    return GlobalConfigs(pool, retention, tuple(channels), level)


_MR_KEYS: tuple[str, ...] = (
    "enabled",
    "mapParallelismDefault",
    "reduceParallelismDefault",
    "shuffleStrategy",
)
_MR_KEYS += ("compressionEnabled", "spillThresholdMB")


def _parse_map_reduce(value: object, path: str, notes: list[NotApplied]) -> MapReduceConfig | None:
    if value is None:
        return None
    r, _ = open_object(value, path, _MR_KEYS)
    shuffle = r.opt_str("shuffleStrategy") or "SORT_BASED"
    if shuffle != "SORT_BASED":
        notes.append(NotApplied(r.at("shuffleStrategy"), "the swarm's shuffle is always sort-based"))
    compression = r.flag("compressionEnabled")
    spill = r.opt_int("spillThresholdMB", minimum=1)
    return MapReduceConfig(
        enabled=r.flag("enabled"),
        map_parallelism_default=r.opt_int("mapParallelismDefault", minimum=1),
        reduce_parallelism_default=r.opt_int("reduceParallelismDefault", minimum=1),
        shuffle_strategy=shuffle,
        compression_enabled=compression,
        spill_threshold_mb=spill,
    )


def _map_reduce_notes(mr: MapReduceConfig, nodes: list[DagNode]) -> list[NotApplied]:
    """`compressionEnabled` and `spillThresholdMB` act on the engine jobs of MAPREDUCE steps only."""
    if mr.enabled and any(node.task.family == "MAPREDUCE" for node in nodes):
        return []
    why = "it is not enabled" if mr.enabled is False else ""
    why = why or "no step of this DAG runs the MAPREDUCE runtime"
    notes = []
    if mr.compression_enabled:
        notes.append(NotApplied("mapReduceConfig.compressionEnabled", f"it compresses MAPREDUCE jobs; {why}"))
    if mr.spill_threshold_mb is not None:
        notes.append(NotApplied("mapReduceConfig.spillThresholdMB", f"it bounds MAPREDUCE jobs' maps; {why}"))
    return notes
