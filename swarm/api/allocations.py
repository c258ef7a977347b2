"""The API's side of seed 004's allocations: the allocations this node made, and the runs that use them.

Planning and the answer are the pure code of `swarm.workflow.allocation` (its docstring says what an
allocation holds). The slots it reserves are held by the coordinator: this node publishes the
reservation's spec, retained on `job/<allocation id>/spec` like a job's, and the coordinator confirms it
on `job/<allocation id>/events` (accepted, or rejected with the reason). The placements stay on this node
until the allocation expires or a run used it, so a run that names it must be started through this
node's API.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from swarm import topics
from swarm.api.analytics import estimates, flow_edges
from swarm.api.auth import ApiUser
from swarm.api.backend import Conflict, Forbidden, Json, NotFound, iso_time
from swarm.api.definitions import ParsedDefinitions
from swarm.api.devices import DeviceWatch
from swarm.api.history import History
from swarm.errors import InvalidSpec
from swarm.messages import Body, SubmitJob
from swarm.trust.roles import allowed
from swarm.workflow.allocation import (
    DEFAULT_HOLD_S,
    MAX_HOLD_S,
    allocation_response,
    apply_allocation,
    plan_allocation,
    reservation_spec,
)
from swarm.workflow.allocation_request import AllocationRequest, parse_allocation
from swarm.workflow.analysis import analyze_flow
from swarm.workflow.fields import DefinitionError
from swarm.workflow.model import DagDefinition
from swarm.workflow.standards import TaskStandard, with_standards

__all__ = ["Allocation", "Allocations", "Publisher"]


class Publisher(Protocol):
    """What the allocations need of their node: to publish signed records."""

    def publish(self, topic: str, body: Body, retain: bool = False) -> None:
        """Sign and send a message."""
        ...


@dataclass(slots=True)
class Allocation:
    """An allocation this node's API made: pinned placement for one run of `dag_id`, until `expires`."""

    dag_id: str
    version: str
    request: AllocationRequest
    members: dict[str, str]
    expires: float
    used_by: str | None = None


class Allocations:
    """The allocations this node made and has not forgotten."""

    def __init__(
        self,
        node: Publisher,
        history: History,
        devices: DeviceWatch,
        standards: Callable[[], Awaitable[dict[str, TaskStandard]]],
        clock: Callable[[], float],
        definitions: ParsedDefinitions,
    ) -> None:
        self._node = node
        self._history = history
        self._devices = devices
        self._standards = standards
        self._clock = clock
        self._definitions = definitions
        self._made: dict[str, Allocation] = {}

    async def allocate(self, body: Json, user: ApiUser) -> Json:
        """Seed 004's allocation: choose a live member for each step named and reserve the slots they
        need (`swarm.workflow.allocation` says what it holds). The placements are kept on this node only:
        start the run through this node's API."""
        request = parse_allocation(body)
        await self._devices.need_members()
        if request.preemption_allowed and not allowed(user.role, "cancel_any"):
            # Preempting stops other people's running attempts, as cancelling them would.
            raise Forbidden(
                f"priorityConfig.preemptionAllowed: role {user.role!r} lacks the cancel_any permission"
                " (an operator's)"
            )
        record = await asyncio.to_thread(self._history.definition, request.dag_id, None)
        if record is None:
            raise NotFound(f"no DAG {request.dag_id!r}")
        if not record["valid"]:
            raise InvalidSpec(f"{request.dag_id} version {record['version']} did not pass its contract check")
        definition = with_standards(self._definitions.of(record), await self._standards())
        now = self._clock()
        for key, old in list(self._made.items()):
            if old.expires <= now:
                del self._made[key]
        asked = request.deadline if request.deadline is not None else now + DEFAULT_HOLD_S
        expires = min(asked, now + MAX_HOLD_S)
        if expires <= now:
            raise DefinitionError(
                "schedulingConstraints.executionDeadline", f"{iso_time(expires)} is not in the future"
            )
        allocation_id = request.allocation_id or f"alloc-{secrets.token_hex(6)}"
        known = self._made.get(allocation_id)
        if known is not None:
            # Its slots are held under this id: a second plan would not replace them.
            used = f"was used by run {known.used_by}" if known.used_by else "exists until it expires"
            raise Conflict(f"allocation {allocation_id} {used}; use another id", path="allocationId")
        plan = plan_allocation(request, definition, self._devices.live())
        owner = (user.id, user.role, user.team)
        reservation = reservation_spec(allocation_id, plan, definition, expires, owner)
        if reservation is not None:
            self._made[allocation_id] = Allocation(
                request.dag_id, definition.version, request, plan.members(), expires
            )
            self._node.publish(topics.job_spec(allocation_id), reservation, retain=True)
        flow = analyze_flow(estimates(definition), flow_edges(definition), self._devices.slots())
        placed = plan.status != "REJECTED"
        return allocation_response(
            allocation_id,
            request,
            plan,
            definition.version,
            iso_time(now),
            iso_time(expires),
            iso_time(now) if placed else None,
            iso_time(now + flow.estimated_seconds) if placed else None,
            reservation,
        )

    def named(self, allocation_id: object, dag_id: str) -> Allocation | None:
        """The unexpired allocation a run start names, or None when it names none."""
        if allocation_id is None:
            return None
        if not isinstance(allocation_id, str):
            raise DefinitionError("allocationId", "expected a string")
        allocation = self._made.get(allocation_id)
        if allocation is None or allocation.expires <= self._clock():
            raise NotFound(
                f"no allocation {allocation_id!r} on this node (allocations are kept by the node that made"
                " them, until they expire)"
            )
        if allocation.dag_id != dag_id:
            raise Conflict(f"allocation {allocation_id} is for DAG {allocation.dag_id}, not {dag_id}")
        return allocation

    @staticmethod
    def apply(
        allocation: Allocation, allocation_id: str, job: SubmitJob, definition: DagDefinition
    ) -> SubmitJob:
        """The run's job with the allocation's placements applied; the allocation is then used by it."""
        if allocation.used_by not in (None, job.job_id):
            raise Conflict(f"allocation {allocation_id} was used by run {allocation.used_by}")
        job = apply_allocation(job, definition, allocation.request, allocation.members, allocation_id)
        allocation.used_by = job.job_id
        return job
