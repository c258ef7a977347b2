"""Seed 004's resource allocation (`POST /api/v1/resources/allocate`): parse, plan, answer, apply.

Pure: the caller passes the definition, the live members and the time.

What an allocation is here
--------------------------
An allocation chooses, for each step it names, the swarm member its tasks will run on, honouring the
step's resources (cores, memory, disk, a GPU), its runtime, the required node labels (`nodeAffinity`),
the members' taints (`tolerations`) and `nodeAntiAffinity` (symmetric: two steps that avoid each
other never share a member), exactly as the coordinator's placement does (`swarm.core.placement.unmet`).
It is then *pinned placement*, not a held reservation: a run started with the `allocationId` before the
allocation expires (`executionDeadline`, or `DEFAULT_HOLD_S` after it was made) sends each step's tasks
to its allocated member, waiting for room there while that member is alive and qualifies, and placing
them like any other task once it is not. Capacity is NOT held in between: other jobs' tasks may use
those members until the run starts, and the response says so (`reservation.holdsCapacity: false`).
Members are not partitioned either: `actualResources` is what the member was checked to have for the
step, not a slice set aside for it.

The run started with an allocation also gets, on every step: the allocation's tolerations, its
priority (`priorityConfig.executionPriority`: CRITICAL/URGENT, HIGH, NORMAL/MEDIUM, LOW, BACKGROUND),
and `preemptionAllowed` (a ready step that finds no room may preempt one running attempt of strictly
lower priority, see `swarm.core.scheduler`); the named steps also get the allocation's resource
minimums, labels and anti-affinity. `executionId` becomes the run's id when the start request gives
none.

Planning is greedy in the DAG's topological order: each step goes to the qualifying member with the
most free slots (slots minus running tasks minus steps already planned there), then with the fewest
PreferNoSchedule taints the step does not tolerate, then the best placement score; a step no member
qualifies for is rejected with the commonest reason. Status: ALLOCATED (every step placed), PARTIAL,
or REJECTED (none placed). `optimizationApplied` lists what the plan did (NODE_AFFINITY,
ANTI_AFFINITY, TAINT_TOLERATION, TAINT_AVOIDANCE, LOAD_SPREADING, PREEMPTION), never more.

Request fields with no meaning on a swarm of devices (container images, storage and network
requirements, environment variables, monitoring, `queuePosition`, ...) are accepted and listed in
`notApplied`, as the define endpoint does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from swarm.core.config import PlacementWeights
from swarm.core.placement import Candidate, score, unmet, unmet_by_all
from swarm.devices.capabilities import Toleration, parse_label, tolerated
from swarm.ids import is_id
from swarm.messages import Heartbeat, Requirements, SubmitJob
from swarm.workflow.compile import step_requirements, step_task_ids
from swarm.workflow.fields import DefinitionError, FieldReader, NotApplied, describe, open_object
from swarm.workflow.model import DagDefinition

__all__ = [
    "DEFAULT_HOLD_S",
    "PRIORITY_NAMES",
    "AllocationPlan",
    "AllocationRequest",
    "StepClaim",
    "StepPlacement",
    "allocation_response",
    "apply_allocation",
    "parse_allocation",
    "plan_allocation",
]

#: How long an allocation waits for its run when the request names no deadline.
DEFAULT_HOLD_S = 600.0
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

_NOT_PARTITIONED = "the swarm does not partition devices; the member was checked to have this much"
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


@dataclass(frozen=True, slots=True)
class StepPlacement:
    """Where one step goes (`member` and its heartbeat) or why it cannot (`reason`)."""

    node_id: str
    member: str | None
    heartbeat: Heartbeat | None = None
    free_slots: int = 0
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AllocationPlan:
    """The placements of an allocation and what the planner did."""

    placements: tuple[StepPlacement, ...]
    optimizations: tuple[dict[str, str], ...] = ()

    @property
    def status(self) -> str:
        """ALLOCATED, PARTIAL or REJECTED."""
        placed = sum(1 for p in self.placements if p.member is not None)
        if placed == len(self.placements) and placed:
            return "ALLOCATED"
        return "PARTIAL" if placed else "REJECTED"

    def members(self) -> dict[str, str]:
        """Step id -> allocated member id, for the placed steps."""
        return {p.node_id: p.member for p in self.placements if p.member is not None}


# --- parsing ----------------------------------------------------------------------------------------


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


# --- planning ---------------------------------------------------------------------------------------


def step_constraints(base: Requirements, request: AllocationRequest, claim: StepClaim | None) -> Requirements:
    """A step's requirements with the allocation's resources, labels and tolerations (not its pin or
    anti-affinity, which depend on the plan and the run)."""
    req = replace(base, tolerations=request.tolerations, preempt=request.preemption_allowed)
    if claim is None:
        return req
    cores = math.ceil(claim.cpu_cores) if claim.cpu_cores > 1 else 0
    return replace(
        req,
        min_cores=max(req.min_cores, cores),
        min_memory_gb=max(req.min_memory_gb, claim.memory_mb / 1024),
        min_storage_gb=max(req.min_storage_gb, claim.disk_gb),
        gpu=True if claim.gpu_units > 0 else req.gpu,
        labels=claim.labels,
    )


def plan_allocation(
    request: AllocationRequest,
    definition: DagDefinition,
    members: Sequence[tuple[str, Heartbeat]],
    weights: PlacementWeights | None = None,
) -> AllocationPlan:
    """Place each claimed step on a live member (`members`: id and last heartbeat), see the module
    docstring; a step the DAG does not have is a `DefinitionError` naming the request's field."""
    for asked in request.steps:
        if not definition.has_node(asked.node_id):
            where = f"{asked.path}.nodeId" if asked.path else "schedulingConstraints"
            raise DefinitionError(where, f"DAG {definition.dag_id} has no step {asked.node_id!r}")
    w = weights or PlacementWeights()
    order = [n for n in definition.topological_order() if request.step(n) is not None]
    planned: dict[str, int] = {}
    placed: dict[str, str] = {}
    placements: dict[str, StepPlacement] = {}
    notes: list[dict[str, str]] = []
    for name in order:
        claim = request.step(name)
        assert claim is not None
        req = step_constraints(step_requirements(definition.node(name)), request, claim)
        avoid = {placed[o]: o for o in claim.avoid if o in placed}
        candidates = [
            Candidate(node_id, hb, held=planned.get(node_id, 0), limit=max(hb.slots, 1))
            for node_id, hb in members
        ]
        fit = [c for c in candidates if unmet(req, c.node_id, c.heartbeat, avoid) is None]
        if not fit:
            why = unmet_by_all(req, candidates, avoid) or "no member qualifies"
            placements[name] = StepPlacement(name, None, reason=why)
            continue
        best = min(fit, key=lambda c: _rank(c, req, w))
        free = best.heartbeat.slots - best.heartbeat.running - best.held
        placements[name] = StepPlacement(name, best.node_id, best.heartbeat, max(free, 0))
        placed[name] = best.node_id
        planned[best.node_id] = planned.get(best.node_id, 0) + 1
        notes.extend(_notes(name, req, claim, best, fit, candidates, avoid, request))
    if len(set(placed.values())) > 1:
        notes.append(
            {
                "type": "LOAD_SPREADING",
                "description": f"{len(placed)} steps over {len(set(placed.values()))} members, each to the"
                " qualifying member with the most free slots",
            }
        )
    ordered = tuple(placements[c.node_id] for c in request.steps)
    return AllocationPlan(ordered, tuple(notes))


def _free(c: Candidate) -> int:
    return c.heartbeat.slots - c.heartbeat.running - c.held


def _repelled(c: Candidate, req: Requirements) -> int:
    return sum(
        1
        for t in c.heartbeat.caps.taints
        if t.effect == "PreferNoSchedule" and not tolerated(req.tolerations, t)
    )


def _rank(c: Candidate, req: Requirements, w: PlacementWeights) -> tuple[bool, int, int, float, str]:
    return (_free(c) <= 0, _repelled(c, req), -_free(c), -score(c, w, req), c.node_id)


def _notes(
    name: str,
    req: Requirements,
    claim: StepClaim,
    best: Candidate,
    fit: list[Candidate],
    candidates: list[Candidate],
    avoid: Mapping[str, str],
    request: AllocationRequest,
) -> list[dict[str, str]]:
    out = []
    if claim.labels:
        shown = ", ".join(f"{k}={v}" for k, v in claim.labels)
        out.append(
            {
                "type": "NODE_AFFINITY",
                "description": f"{name}: only members labelled {shown} ({best.node_id} among"
                f" {sum(1 for c in candidates if _has_labels(c, claim.labels))} of {len(candidates)})",
            }
        )
    if best.node_id not in avoid and any(
        unmet(req, c.node_id, c.heartbeat) is None and c.node_id in avoid for c in candidates
    ):
        kept = ", ".join(f"{m} ({t})" for m, t in sorted(avoid.items()))
        out.append({"type": "ANTI_AFFINITY", "description": f"{name} kept off {kept}"})
    passed = [t.text for t in best.heartbeat.caps.taints if tolerated(request.tolerations, t)]
    if passed:
        out.append(
            {
                "type": "TAINT_TOLERATION",
                "description": f"{name} on {best.node_id} past its taint {', '.join(passed)}",
            }
        )
    if _repelled(best, req) == 0 and any(_repelled(c, req) for c in fit):
        out.append(
            {
                "type": "TAINT_AVOIDANCE",
                "description": f"{name}: members with a PreferNoSchedule taint passed over",
            }
        )
    if _free(best) <= 0 and request.preemption_allowed:
        out.append(
            {
                "type": "PREEMPTION",
                "description": f"{name}: {best.node_id} has no free slot now; the step may preempt"
                " lower-priority work there",
            }
        )
    return out


def _has_labels(c: Candidate, labels: tuple[tuple[str, str], ...]) -> bool:
    have = c.heartbeat.caps.label_map()
    return all(have.get(k) == v for k, v in labels)


# --- the answer and the run -------------------------------------------------------------------------


def _host(url: str) -> str | None:
    """The host of a member's advertised API URL, or None."""
    if "://" not in url:
        return None
    rest = url.split("://", 1)[1].split("/", 1)[0]
    host = rest.rsplit(":", 1)[0] if not rest.endswith("]") else rest
    return host.strip("[]") or None


def allocation_response(
    allocation_id: str,
    request: AllocationRequest,
    plan: AllocationPlan,
    version: str,
    allocated_at: str,
    expires_at: str,
    start: str | None,
    completion: str | None,
) -> dict[str, Any]:
    """The seed's response body, with what this swarm does and does not do said plainly."""
    compute = []
    for p in plan.placements:
        if p.member is None or p.heartbeat is None:
            continue
        claim = request.step(p.node_id)
        assert claim is not None
        compute.append(
            {
                "nodeId": p.node_id,
                "allocatedNodeId": p.member,
                "memberName": p.heartbeat.name,
                "physicalHost": p.heartbeat.caps.hostname,
                "actualResources": claim.resources_json(),
                "ipAddress": _host(p.heartbeat.api),
                "freeSlotsNow": p.free_slots,
            }
        )
    status = plan.status
    return {
        "allocationId": allocation_id,
        "dagId": request.dag_id,
        "version": version,
        "executionId": request.execution_id,
        "status": status,
        "allocationTime": allocated_at,
        "expiresAt": expires_at,
        "reservation": {
            "mode": "PINNED_PLACEMENT",
            "holdsCapacity": False,
            "expiresAt": expires_at,
            "description": "a run started with this allocationId before it expires sends each step to its"
            " allocated member; capacity is not held until then, and " + _NOT_PARTITIONED,
        },
        "allocatedResources": {"computeResources": compute},
        "rejectedResources": [
            {"nodeId": p.node_id, "reason": p.reason} for p in plan.placements if p.member is None
        ],
        "estimatedStartTime": start,
        "estimatedCompletionTime": completion,
        "optimizationApplied": [dict(o) for o in plan.optimizations],
        "notApplied": [{"path": n.path, "reason": n.reason} for n in request.not_applied],
        "nextActions": ["START_EXECUTION", "CANCEL_ALLOCATION"] if status != "REJECTED" else ["FIX_REQUEST"],
    }


def apply_allocation(
    job: SubmitJob, definition: DagDefinition, request: AllocationRequest, members: Mapping[str, str]
) -> SubmitJob:
    """The run's job with the allocation applied to its tasks: every step gets the tolerations, the
    priority and the preemption flag; the named steps also their resources, labels, anti-affinity (as
    task ids of this run) and their allocated member (`members`: step id -> member id) as a pin."""
    task_ids = {n.node_id: step_task_ids(job.job_id, n, definition) for n in definition.nodes}
    step_of = {task_id: name for name, ids in task_ids.items() for task_id in ids}
    tasks = []
    for spec in job.tasks:
        name = step_of.get(spec.task_id)
        claim = request.step(name) if name is not None else None
        req = step_constraints(spec.requirements, request, claim)
        if claim is not None:
            avoid = tuple(t for other in claim.avoid for t in task_ids.get(other, ()))
            pin = (members[claim.node_id],) if claim.node_id in members else ()
            req = replace(req, avoid=avoid, pin=pin)
        priority = spec.priority if request.priority is None else request.priority
        tasks.append(replace(spec, requirements=req, priority=priority))
    return replace(job, tasks=tuple(tasks), meta={**job.meta, "allocation": request.allocation_id or ""})
