"""Seed 004's resource allocation (`POST /api/v1/resources/allocate`): parse, plan, answer, apply.

Pure: the caller passes the definition, the live members and the time.

What an allocation is here
--------------------------
An allocation chooses, for each step it names, the swarm member its tasks will run on, honouring the
step's resources (cores, memory, disk, a GPU), its runtime, the required node labels (`nodeAffinity`),
the members' taints (`tolerations`) and `nodeAntiAffinity` (symmetric: two steps that avoid each
other never share a member), exactly as the coordinator's placement does (`swarm.core.placement.unmet`).
A run started with the `allocationId` before the allocation expires (`executionDeadline`, or
`DEFAULT_HOLD_S` after it was made, and at most `MAX_HOLD_S`) sends each step's tasks to its allocated
member, waiting for room there while that member is alive and qualifies, and placing them like any other
task once it is not.

It is also a *reservation* (`reservation_spec`): the execution slots the named steps need on their
members (a step's `parallelism` tasks, at most the member's slots) are held by the coordinator from the
allocation until the run's tasks start in them, the run ends, or the allocation expires; other work is
not placed into them (`swarm.core.reservations` has the rules, and why it survives a failover). Slots
are the coordinator's unit of capacity: members are not partitioned by cores or memory, so
`actualResources` is what the member was checked to have for the step, not a slice set aside for it.

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

The request is parsed by `swarm.workflow.allocation_request`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from swarm.core.config import PlacementWeights
from swarm.core.placement import Candidate, score, unmet, unmet_by_all
from swarm.core.reservations import MAX_HOLD_S
from swarm.devices.capabilities import tolerated
from swarm.messages import RESERVATION_KIND, Heartbeat, Hold, Requirements, SubmitJob
from swarm.workflow.allocation_request import AllocationRequest, StepClaim
from swarm.workflow.compile import step_requirements, step_task_ids
from swarm.workflow.fields import DefinitionError
from swarm.workflow.model import DagDefinition

__all__ = [
    "DEFAULT_HOLD_S",
    "MAX_HOLD_S",
    "AllocationPlan",
    "StepPlacement",
    "allocation_response",
    "apply_allocation",
    "plan_allocation",
    "reservation_spec",
]

#: How long an allocation waits for its run when the request names no deadline (at most `MAX_HOLD_S`,
#: the longest a reservation holds slots).
DEFAULT_HOLD_S = 600.0

_NOT_PARTITIONED = "the swarm does not partition devices; the member was checked to have this much"


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


def reservation_spec(
    allocation_id: str,
    plan: AllocationPlan,
    definition: DagDefinition,
    expires: float,
    owner: tuple[str, str, str],
) -> SubmitJob | None:
    """The reservation an allocation makes, as the job spec the coordinator holds (None when nothing was
    placed): per member, the tasks of the steps placed there (`parallelism` each), at most its slots.
    `owner` is the requester's (id, role, team)."""
    wanted: dict[str, int] = {}
    slots: dict[str, int] = {}
    for p in plan.placements:
        if p.member is None or p.heartbeat is None:
            continue
        wanted[p.member] = wanted.get(p.member, 0) + definition.node(p.node_id).execution.parallelism
        slots[p.member] = max(p.heartbeat.slots, 1)
    if not wanted:
        return None
    holds = tuple(Hold(m, min(n, slots[m])) for m, n in sorted(wanted.items()))
    submitted_by, role, team = owner
    return SubmitJob(
        allocation_id,
        (),
        kind=RESERVATION_KIND,
        submitted_by=submitted_by,
        role=role,
        team=team,
        meta={"dag": definition.dag_id, "version": definition.version},
        holds=holds,
        expires=expires,
    )


def allocation_response(
    allocation_id: str,
    request: AllocationRequest,
    plan: AllocationPlan,
    version: str,
    allocated_at: str,
    expires_at: str,
    start: str | None,
    completion: str | None,
    reservation: SubmitJob | None = None,
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
        "reservation": _reservation_json(reservation, expires_at),
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


def _reservation_json(reservation: SubmitJob | None, expires_at: str) -> dict[str, Any]:
    if reservation is None:
        return {"mode": "NONE", "holdsCapacity": False, "description": "nothing was placed, nothing is held"}
    return {
        "mode": "RESERVED",
        "holdsCapacity": True,
        "reservationId": reservation.job_id,
        "expiresAt": expires_at,
        "heldSlots": [{"allocatedNodeId": h.node, "slots": h.slots} for h in reservation.holds],
        "description": "the coordinator holds these execution slots until the run started with this"
        " allocationId starts its steps in them, the run ends, or the allocation expires; other work is"
        " not placed into them. A run started with it sends each step to its allocated member. "
        + _NOT_PARTITIONED,
    }


def apply_allocation(
    job: SubmitJob,
    definition: DagDefinition,
    request: AllocationRequest,
    members: Mapping[str, str],
    allocation_id: str,
) -> SubmitJob:
    """The run's job with allocation `allocation_id` applied to its tasks: every step gets the
    tolerations, the priority and the preemption flag; the named steps also their resources, labels,
    anti-affinity (as task ids of this run) and their allocated member (`members`: step id -> member id)
    as a pin. The job names the allocation (`meta["allocation"]`), so the coordinator hands it the slots
    held for it; the id is the one the allocation was made with, which the request names only when its
    sender chose it."""
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
    return replace(job, tasks=tuple(tasks), meta={**job.meta, "allocation": allocation_id})
