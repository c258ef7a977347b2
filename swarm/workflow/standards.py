"""Task standards (seed 004's "task standard centre"): a reusable contract a DAG node can adopt.

A standard names a category (ETL, ANALYSIS, ML, BATCH), the typed interface (inputSchema, outputSchema),
a resource ceiling and an SLA (longest acceptable run, lowest acceptable success rate). A node adopts one
with `taskDefinition.standard: "name@version"`; `apply_standard` gives the node the standard's interface
and checks its resource request against the ceiling. The wire shape::

    {"name": "etl-extract", "version": "1.0", "category": "ETL", "description": "...",
     "inputSchema": {...}, "outputSchema": {...},
     "resourceCeiling": {"cpuCores": 8, "memoryMB": 16384, "diskGB": 100, "gpuUnits": 0},
     "sla": {"maxDuration": "PT1H", "minSuccessRate": 0.99}}

A ceiling field left out means no limit on that resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

from swarm.ids import is_id
from swarm.workflow.definition_parser import parse_schema
from swarm.workflow.durations import format_duration
from swarm.workflow.fields import DefinitionError, FieldReader, open_object
from swarm.workflow.model import DagDefinition, DagNode, FieldSpec, is_version, schema_json

__all__ = [
    "Category",
    "ResourceCeiling",
    "Sla",
    "TaskStandard",
    "apply_standard",
    "parse_standard",
    "with_standards",
]

Category = Literal["ETL", "ANALYSIS", "ML", "BATCH"]
_CATEGORIES = ("ETL", "ANALYSIS", "ML", "BATCH")
_KEYS = (
    "name",
    "version",
    "category",
    "description",
    "inputSchema",
    "outputSchema",
    "resourceCeiling",
    "sla",
)
#: (wire name, attribute) of each resource a ceiling may limit.
_LIMITS = (
    ("cpuCores", "cpu_cores"),
    ("memoryMB", "memory_mb"),
    ("diskGB", "disk_gb"),
    ("gpuUnits", "gpu_units"),
)


@dataclass(frozen=True, slots=True)
class ResourceCeiling:
    """The most one task of a conforming node may ask for; None means no limit."""

    cpu_cores: float | None = None
    memory_mb: float | None = None
    disk_gb: float | None = None
    gpu_units: int | None = None


@dataclass(frozen=True, slots=True)
class Sla:
    """Longest acceptable run (seconds) and lowest acceptable success rate (0..1); None means unset."""

    max_duration_s: float | None = None
    min_success_rate: float | None = None


@dataclass(frozen=True, slots=True)
class TaskStandard:
    """A task contract; nodes refer to it as `key` ("name@version")."""

    name: str
    version: str
    category: Category
    description: str = ""
    input_schema: Mapping[str, FieldSpec] = field(default_factory=dict)
    output_schema: Mapping[str, FieldSpec] = field(default_factory=dict)
    resource_ceiling: ResourceCeiling = field(default_factory=ResourceCeiling)
    sla: Sla = field(default_factory=Sla)

    @property
    def key(self) -> str:
        """How a node names this standard: `name@version`."""
        return f"{self.name}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        """The camelCase wire shape; `parse_standard(s.to_json()) == s`."""
        ceiling = {wire: getattr(self.resource_ceiling, attr) for wire, attr in _LIMITS}
        sla: dict[str, Any] = {}
        if self.sla.max_duration_s is not None:
            sla["maxDuration"] = format_duration(self.sla.max_duration_s)
        if self.sla.min_success_rate is not None:
            sla["minSuccessRate"] = self.sla.min_success_rate
        return {
            "name": self.name,
            "version": self.version,
            "category": self.category,
            "description": self.description,
            "inputSchema": schema_json(self.input_schema),
            "outputSchema": schema_json(self.output_schema),
            "resourceCeiling": {key: value for key, value in ceiling.items() if value is not None},
            "sla": sla,
        }


def parse_standard(data: object) -> TaskStandard:
    """A `TaskStandard` from its camelCase JSON value; DefinitionError naming the field if invalid."""
    r, _ = open_object(data, "", _KEYS)
    name, version = r.req_str("name"), r.req_str("version")
    if not is_id(name):
        raise DefinitionError("name", f"{name!r} is not a valid id (letters, digits and _ . : = -)")
    if "@" in name:
        raise DefinitionError("name", "a standard's name may not contain '@' (nodes write name@version)")
    if not is_version(version):
        raise DefinitionError("version", f"expected MAJOR.MINOR[.PATCH] like 1.0.2, got {version!r}")
    description = r.data.get("description", "")
    if not isinstance(description, str):
        raise DefinitionError("description", "expected a string")
    return TaskStandard(
        name=name,
        version=version,
        category=cast(Category, r.choice("category", _CATEGORIES, "")),
        description=description,
        input_schema=parse_schema(r.data.get("inputSchema") or {}, "inputSchema"),
        output_schema=parse_schema(r.data.get("outputSchema") or {}, "outputSchema"),
        resource_ceiling=_parse_ceiling(r.data.get("resourceCeiling") or {}),
        sla=_parse_sla(r.data.get("sla") or {}),
    )


def _parse_ceiling(value: object) -> ResourceCeiling:
    r, _ = open_object(value, "resourceCeiling", tuple(wire for wire, _ in _LIMITS))
    return ResourceCeiling(
        cpu_cores=_opt_number(r, "cpuCores"),
        memory_mb=_opt_number(r, "memoryMB"),
        disk_gb=_opt_number(r, "diskGB"),
        gpu_units=r.opt_int("gpuUnits"),
    )


def _opt_number(r: FieldReader, key: str) -> float | None:
    return None if r.data.get(key) is None else r.number(key, 0)


def _parse_sla(value: object) -> Sla:
    r, _ = open_object(value, "sla", ("maxDuration", "minSuccessRate"))
    rate = _opt_number(r, "minSuccessRate")
    if rate is not None and rate > 1:
        raise DefinitionError("sla.minSuccessRate", f"a rate between 0 and 1, got {rate}")
    longest = r.duration("maxDuration")
    if longest is not None and longest <= 0:
        raise DefinitionError("sla.maxDuration", "must be longer than zero")
    return Sla(max_duration_s=longest, min_success_rate=rate)


def apply_standard(node: DagNode, standard: TaskStandard) -> tuple[DagNode, list[str]]:
    """The node as its standard makes it, and the ways the node breaks the standard.

    The node gets the standard's inputs and outputs (its own extra outputs and optional inputs stay; a
    field it redeclares with another type is a problem and keeps the standard's type), its resource
    request capped at the ceiling (a request above it is a problem), and the SLA's maximum duration as its
    timeout when it has none.
    """
    problems: list[str] = []
    key = standard.key
    inputs = _merge("input", standard.input_schema, node.task.input_schema, key, problems)
    for name, spec in node.task.input_schema.items():
        if name not in standard.input_schema and spec.required and not spec.has_default:
            problems.append(f"input {name} is required by the node but is not part of the standard {key}")
    own_outputs = node.task.output_schema
    outputs: Mapping[str, FieldSpec] | None = own_outputs
    if standard.output_schema or own_outputs is not None:
        outputs = _merge("output", standard.output_schema, own_outputs or {}, key, problems)
    capped: dict[str, Any] = {}
    for wire, attr in _LIMITS:
        limit, asked = getattr(standard.resource_ceiling, attr), getattr(node.resources, attr)
        if limit is not None and asked > limit:
            problems.append(f"{wire} {asked} is above the ceiling of {limit} set by the standard {key}")
            capped[attr] = limit
    execution = node.execution
    if execution.timeout_s is None and standard.sla.max_duration_s is not None:
        execution = replace(execution, timeout_s=standard.sla.max_duration_s)
    task = replace(node.task, input_schema=inputs, output_schema=outputs)
    return replace(
        node, task=task, resources=replace(node.resources, **capped), execution=execution
    ), problems


def _merge(
    what: str, theirs: Mapping[str, FieldSpec], ours: Mapping[str, FieldSpec], key: str, problems: list[str]
) -> dict[str, FieldSpec]:
    merged = dict(theirs)
    for name, spec in ours.items():
        if name in theirs and spec.type != theirs[name].type:
            problems.append(
                f"{what} {name}: the node declares {spec.type}, the standard {key} says {theirs[name].type}"
            )
        elif name not in theirs:
            merged[name] = spec
    return merged


def with_standards(definition: DagDefinition, standards: Mapping[str, TaskStandard]) -> DagDefinition:
    """The definition as it runs: every node that references a standard made by it (`apply_standard`).
    A reference to an unknown standard, or a node its standard refuses, is a `DefinitionError`."""
    nodes = []
    for i, node in enumerate(definition.nodes):
        ref = node.task.standard
        if ref is None:
            nodes.append(node)
            continue
        standard = standards.get(ref)
        if standard is None:
            raise DefinitionError(f"nodes[{i}].taskDefinition.standard", f"standard {ref} is not defined")
        applied, problems = apply_standard(node, standard)
        if problems:
            raise DefinitionError(f"nodes[{i}]", "; ".join(problems))
        nodes.append(applied)
    return replace(definition, nodes=tuple(nodes))
