"""Scheduled runs: which DAGs have a schedule, which slots fired, and starting those that are due.

The node acting as coordinator calls `fire_due` every second; the planner (`swarm.workflow.schedules`)
says which slots are due. A slot counts as fired once its `RunStarted` record came back from the broker,
not when it was sent: a record lost on the way is sent again, under the same run id, after
`RESEND_AFTER_S`. Every node learns fired slots from those retained records, so a successor coordinator
continues after the last slot its predecessor fired.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from swarm import topics
from swarm.api.auth import ApiUser
from swarm.api.backend import Forbidden, Json
from swarm.errors import InvalidSpec
from swarm.messages import Body, DagDefined, RunStarted, SubmitJob
from swarm.runtime.artifacts import version_key
from swarm.workflow.definition_parser import schedule_of
from swarm.workflow.schedules import Scheduled, due_runs

__all__ = ["RESEND_AFTER_S", "ScheduledRuns", "StartRun"]

log = logging.getLogger(__name__)

#: Seconds after which a scheduled run's records that never came back from the broker are sent again.
RESEND_AFTER_S = 5.0


class Publisher(Protocol):
    """What the schedules need of their node: to publish signed records."""

    def publish(self, topic: str, body: Body, retain: bool = False) -> None:
        """Sign and send a message."""
        ...


class StartRun(Protocol):
    """`WorkflowService.start_run`."""

    def __call__(
        self, dag_id: str, body: Json, user: ApiUser, trigger: str = ..., slot: float | None = ...
    ) -> Awaitable[Json]:
        """Start a run of `dag_id` on behalf of `user`."""
        ...


class ScheduledRuns:
    """The schedule of every DAG that has one, and the slots fired."""

    def __init__(self, node: Publisher, start: StartRun, clock: Callable[[], float]) -> None:
        self._node = node
        self._start = start
        self._clock = clock
        self._scheduled: dict[str, Scheduled] = {}
        #: Per DAG, the newest slot known fired.
        self.last_fired: dict[str, float] = {}
        #: Scheduled runs sent but not yet heard back from the broker: (record, job, when sent).
        self._unconfirmed: dict[str, tuple[RunStarted, SubmitJob, float]] = {}

    def on_defined(self, body: DagDefined) -> None:
        """The newest valid version of a DAG decides its schedule."""
        known = self._scheduled.get(body.dag_id)
        if not body.valid or (known is not None and version_key(known.version) >= version_key(body.version)):
            return
        schedule = schedule_of(body.definition)
        if schedule.type == "MANUAL":
            self._scheduled.pop(body.dag_id, None)
            return
        self._scheduled[body.dag_id] = Scheduled(
            body.dag_id, body.version, schedule, body.created_at, body.created_by, body.role
        )

    def on_run_started(self, body: RunStarted) -> None:
        """A run's record came back from the broker: its slot, if it has one, fired."""
        if body.slot is not None:
            self._fired(body.dag_id, body.slot)
            self._unconfirmed.pop(body.run_id, None)

    def sent(self, started: RunStarted, job: SubmitJob, now: float) -> None:
        """A scheduled run's records went out; they count once they come back."""
        self._unconfirmed[job.job_id] = (started, job, now)

    async def fire_due(self) -> list[str]:
        """Start every scheduled run that is due (the acting coordinator's node calls this every second);
        the run ids started."""
        started = []
        now = self._clock()
        for due in due_runs(self._scheduled.values(), self.last_fired, now):
            item = due.scheduled
            pending = self._unconfirmed.get(due.run_id)
            if pending is not None:
                # Fired, but its record has not come back from the broker: it may have been lost (a
                # broker restart, a one-way partition). Send the same records again, same run id.
                if now - pending[2] >= RESEND_AFTER_S:
                    self._node.publish(topics.workflow_run(due.run_id), pending[0], retain=True)
                    self._node.publish(topics.job_spec(due.run_id), pending[1], retain=True)
                    self._unconfirmed[due.run_id] = (pending[0], pending[1], now)
                continue
            owner = ApiUser(item.owner, "user", item.role)
            body = {"runId": due.run_id, "version": item.version}
            try:
                await self._start(item.dag_id, body, owner, trigger="schedule", slot=due.slot)
            except (InvalidSpec, Forbidden) as exc:
                # It would fail the same way every second: this slot is given up, said once.
                log.warning("scheduled run %s not started: %s", due.run_id, exc)
                self._fired(item.dag_id, due.slot)
                continue
            started.append(due.run_id)
        return started

    def _fired(self, dag_id: str, slot: float) -> None:
        self.last_fired[dag_id] = max(slot, self.last_fired.get(dag_id, slot))
