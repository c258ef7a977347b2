"""Seed 004's allocation request (`POST /api/v1/resources/allocate`), parsed strictly.

Per step: resources (`cpuCores`, `memoryMB`, `diskGB`, `gpuUnits`); `schedulingConstraints`:
`executionDeadline`, `nodeAffinity` (required labels), `nodeAntiAffinity` (steps to avoid), `tolerations`;
`priorityConfig`: `executionPriority` and `preemptionAllowed`. Request fields with no meaning on a swarm
of devices (container images, storage and network requirements, environment variables, monitoring,
`queuePosition`, ...) are accepted and listed in `notApplied`, as the define endpoint does. What an
allocation does with the request is `swarm.workflow.allocation`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from swarm.devices.capabilities import Toleration, parse_label
from swarm.ids import is_id
from swarm.workflow.fields import DefinitionError, FieldReader, NotApplied, describe, open_object

__all__ = ["PRIORITY_NAMES", "AllocationRequest", "StepClaim", "parse_allocation"]

#: Seed priority names -> task priority (an index into `swarm.messages.PRIORITIES`).
PRIORITY_NAMES: dict[str, int] = {
    "CRITICAL": 0,
    "URGENT": 0,
    "HIGH": 1,
    "NORMAL": 2,
    "MEDIUM": 2,
    "LOW": 3,
    "BACKGROUND": 4,
}

_TOP_IGNORED = {
    "monitoringConfig": "metrics, logs and alerts come from the node's own history and stream",
}
_RESOURCES_IGNORED = {
    "storageRequirements": "the swarm does not provision storage",
    "networkRequirements": "the swarm does not reserve network bandwidth or isolate networks",
}
_STEP_IGNORED = {
    "resourceProfile": "profiles are not used; the numbers given are",
    "networkPriority": "the swarm does not prioritise network traffic",
    "containerImage": "steps run in the node's runtimes, not in containers",
    "environmentVariables": "steps get inputs and params, not environment variables",
    "gpuType": "members announce only whether they have a GPU",
}
_PRIORITY_IGNORED = {"queuePosition": "the queue is ordered by priority, then by arrival"}


@dataclass(frozen=True, slots=True)
class StepClaim:
    """What the request asks for one step: resources, required labels and steps to avoid."""

    node_id: str
    cpu_cores: float = 0
    memory_mb: float = 0
    disk_gb: float = 0
    gpu_units: int = 0
    labels: tuple[tuple[str, str], ...] = ()
    avoid: tuple[str, ...] = ()
    path: str = ""

    def resources_json(self) -> dict[str, Any]:
        """The seed's `actualResources` for this claim."""
        out: dict[str, Any] = {"cpuCores": self.cpu_cores, "memoryMB": self.memory_mb, "diskGB": self.disk_gb}
        if self.gpu_units:
            out["gpuUnits"] = self.gpu_units
        return out


@dataclass(frozen=True, slots=True)
class AllocationRequest:
    """A parsed allocate request."""

    dag_id: str
    steps: tuple[StepClaim, ...]
    allocation_id: str | None = None
    execution_id: str | None = None
    deadline: float | None = None
    tolerations: tuple[Toleration, ...] = ()
    priority: int | None = None
    preemption_allowed: bool = False
    not_applied: tuple[NotApplied, ...] = ()

    def step(self, node_id: str) -> StepClaim | None:
        """The claim on one step, if the request names it."""
        return next((s for s in self.steps if s.node_id == node_id), None)


def parse_allocation(body: object) -> AllocationRequest:
    """The seed's allocate request; `DefinitionError` naming the exact field when it is wrong."""
    notes: list[NotApplied] = []
    known = ("allocationId", "dagId", "executionId", "resourceRequirements", "schedulingConstraints")
    r, _ = open_object(body, "", (*known, "priorityConfig"), notes, _TOP_IGNORED)
    allocation_id = _opt_id(r, "allocationId")
    execution_id = _opt_id(r, "executionId")
    dag_id = _opt_id(r, "dagId")
    if dag_id is None:
        raise DefinitionError("dagId", "required: the DAG whose steps are allocated")
    claims = _parse_compute(r.data.get("resourceRequirements"), notes)
    deadline: float | None = None
    tolerations: tuple[Toleration, ...] = ()
    labels: dict[str, dict[str, str]] = {}
    avoid: dict[str, set[str]] = {}
    constraints = r.data.get("schedulingConstraints")
    if constraints is not None:
        c, _ = open_object(
            constraints,
            "schedulingConstraints",
            ("executionDeadline", "nodeAffinity", "nodeAntiAffinity", "tolerations"),
        )
        deadline = _time(c, "executionDeadline")
        labels = _parse_affinity(c)
        avoid = _parse_anti_affinity(c)
        tolerations = _parse_tolerations(c)
    priority, preempt = _parse_priority(r.data.get("priorityConfig"), notes)
    for name in (*labels, *avoid, *(o for others in avoid.values() for o in others)):
        claims.setdefault(name, StepClaim(name))
    # Anti-affinity is symmetric: each of two steps avoids the other's member.
    mutual = {name: set(others) for name, others in avoid.items()}
    for name, others in avoid.items():
        for other in others:
            mutual.setdefault(other, set()).add(name)
    steps = tuple(
        replace(
            claim,
            labels=tuple(sorted(labels.get(name, {}).items())),
            avoid=tuple(sorted(mutual.get(name, ()))),
        )
        for name, claim in claims.items()
    )
    if not steps:
        raise DefinitionError("resourceRequirements.computeResources", "names no step to allocate")
    return AllocationRequest(
        dag_id, steps, allocation_id, execution_id, deadline, tolerations, priority, preempt, tuple(notes)
    )


def _opt_id(r: FieldReader, key: str) -> str | None:
    value = r.opt_str(key)
    if value is not None and not is_id(value):
        raise DefinitionError(r.at(key), f"{value[:60]!r} is not a valid id (letters, digits, . _ - @)")
    return value


def _parse_compute(value: object, notes: list[NotApplied]) -> dict[str, StepClaim]:
    if value is None:
        return {}
    path = "resourceRequirements"
    r, _ = open_object(value, path, ("computeResources",), notes, _RESOURCES_IGNORED)
    items = r.data.get("computeResources", [])
    if not isinstance(items, list):
        raise DefinitionError(r.at("computeResources"), f"expected an array, got {describe(items)}")
    out: dict[str, StepClaim] = {}
    for i, item in enumerate(items):
        where = f"{path}.computeResources[{i}]"
        s, _ = open_object(
            item, where, ("nodeId", "cpuCores", "memoryMB", "diskGB", "gpuUnits"), notes, _STEP_IGNORED
        )
        name = _step_id(s, "nodeId")
        if name in out:
            raise DefinitionError(s.at("nodeId"), f"step {name!r} is listed twice")
        out[name] = StepClaim(
            name,
            cpu_cores=s.number("cpuCores", 0),
            memory_mb=s.number("memoryMB", 0),
            disk_gb=s.number("diskGB", 0),
            gpu_units=s.integer("gpuUnits", 0),
            path=where,
        )
    return out


def _step_id(r: FieldReader, key: str) -> str:
    name = r.req_str(key)
    if not is_id(name):
        raise DefinitionError(r.at(key), f"{name[:60]!r} is not a valid step id")
    return name


def _array(r: FieldReader, key: str) -> list[Any]:
    value = r.data.get(key, [])
    if not isinstance(value, list):
        raise DefinitionError(r.at(key), f"expected an array, got {describe(value)}")
    return value


def _time(r: FieldReader, key: str) -> float | None:
    value = r.data.get(key)
    if value is None:
        return None
    example = "an ISO-8601 time with its zone, like 2023-11-22T05:00:00Z"
    if not isinstance(value, str):
        raise DefinitionError(r.at(key), f"expected {example}, got {describe(value)}")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise DefinitionError(r.at(key), f"expected {example}, got {value[:40]!r}") from None
    if when.tzinfo is None:
        raise DefinitionError(r.at(key), f"expected {example} (the zone is missing), got {value[:40]!r}")
    return when.timestamp()


def _parse_affinity(c: FieldReader) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for i, item in enumerate(_array(c, "nodeAffinity")):
        a, _ = open_object(item, f"{c.at('nodeAffinity')}[{i}]", ("nodeId", "requiredNodeLabels"))
        name = _step_id(a, "nodeId")
        required = a.data.get("requiredNodeLabels", {})
        if not isinstance(required, dict):
            raise DefinitionError(a.at("requiredNodeLabels"), f"expected an object, got {describe(required)}")
        mine = out.setdefault(name, {})
        for key, given in required.items():
            where = f"{a.at('requiredNodeLabels')}.{key}"
            # {"gpu-available": true} means the label value "true".
            value = str(given).lower() if isinstance(given, bool) else given
            if not isinstance(value, str):
                raise DefinitionError(where, f"expected a string, got {describe(value)}")
            try:
                parse_label(f"{key}={value}")
            except ValueError as exc:
                raise DefinitionError(where, str(exc)) from None
            if mine.get(key, value) != value:
                raise DefinitionError(where, f"step {name!r} already requires {key}={mine[key]}")
            mine[key] = value
    return out


def _parse_anti_affinity(c: FieldReader) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for i, item in enumerate(_array(c, "nodeAntiAffinity")):
        a, _ = open_object(item, f"{c.at('nodeAntiAffinity')}[{i}]", ("nodeId", "avoidSameNodeAs"))
        name = _step_id(a, "nodeId")
        mine = out.setdefault(name, set())
        for j, other in enumerate(_array(a, "avoidSameNodeAs")):
            where = f"{a.at('avoidSameNodeAs')}[{j}]"
            if not isinstance(other, str) or not is_id(other):
                raise DefinitionError(where, f"expected a step id, got {describe(other)}")
            if other == name:
                raise DefinitionError(where, "a step cannot avoid itself")
            mine.add(other)
    return out


def _parse_tolerations(c: FieldReader) -> tuple[Toleration, ...]:
    out = []
    for i, item in enumerate(_array(c, "tolerations")):
        t, _ = open_object(item, f"{c.at('tolerations')}[{i}]", ("key", "operator", "value", "effect"))
        for key in ("key", "value", "effect"):
            if not isinstance(t.data.get(key, ""), str):
                raise DefinitionError(t.at(key), f"expected a string, got {describe(t.data[key])}")
        operator = t.choice("operator", ("Equal", "Exists"), "Equal")
        try:
            out.append(
                Toleration(
                    t.data.get("key", ""),
                    "Exists" if operator == "Exists" else "Equal",
                    t.data.get("value", ""),
                    t.data.get("effect", ""),
                )
            )
        except ValueError as exc:
            raise DefinitionError(t.path, str(exc)) from None
    return tuple(out)


def _parse_priority(value: object, notes: list[NotApplied]) -> tuple[int | None, bool]:
    if value is None:
        return None, False
    p, _ = open_object(
        value, "priorityConfig", ("executionPriority", "preemptionAllowed"), notes, _PRIORITY_IGNORED
    )
    name = p.opt_str("executionPriority")
    if name is not None and name.upper() not in PRIORITY_NAMES:
        raise DefinitionError(
            p.at("executionPriority"), f"expected one of {', '.join(PRIORITY_NAMES)}, got {name[:40]!r}"
        )
    return (None if name is None else PRIORITY_NAMES[name.upper()]), p.flag("preemptionAllowed")
