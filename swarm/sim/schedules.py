"""Scheduled DAG runs in the simulator: the acting coordinator fires cron slots, across its crashes.

`CronDriver` stands for the API service's `fire_due` on every simulated node: once a simulated second,
each live node that acts as coordinator (its `scheduler` is not None) asks the real planner
(`swarm.workflow.schedules.due_runs`) which slots are due, and submits each as the service does: a
retained `RunStarted` on `wf/run/<run id>`, then the job's retained spec, built by the real compiler with
the slot's run id. The time it asks with is the node's own clock read as a wall clock (`EPOCH0` plus the
virtual time plus the node's skew).

What a node knows of fired slots (`last_fired`) is modelled as the service rebuilds it: from the retained
`RunStarted` records that reached the broker (only while the node hears the broker), plus the slots it
fired itself since it last started. A slot whose submission was lost with its coordinator's link is thus
unknown to the successor, which fires it again under the same run id.

The schedule ends at `end` (virtual seconds): the planner is asked with the clock held there, so the
slots of the window are exactly those in (created, end], and a coordinator elected after `end` still
catches up the ones missed. `check` holds the scheduling invariant: every slot of the window reached the
broker and its run finished with every task committed; no other run of the DAG exists.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from swarm import topics
from swarm.core.tracker import JobProgress
from swarm.messages import RunStarted
from swarm.sim.dags import GenDag, compile_sim_run, generate_dag
from swarm.sim.invariants import Checker
from swarm.sim.world import SimNode, SimWorld
from swarm.workflow.cron import CronExpr, next_slot, slot_run_id
from swarm.workflow.definition_parser import parse_definition
from swarm.workflow.model import DagDefinition
from swarm.workflow.schedules import Scheduled, due_runs

__all__ = ["EPOCH0", "CronDriver", "window_slots"]

#: The wall-clock instant of virtual time 0: 2026-01-01T00:00:00Z, a minute (and hour) boundary, so
#: that the slots of `*/1 * * * *` fall on whole multiples of 60 virtual seconds.
EPOCH0 = 1767225600.0
#: How often (virtual seconds) a coordinator's node consults the planner, as the service does.
PERIOD = 1.0


def window_slots(expression: str, tz: str, created: float, end: float) -> list[float]:
    """The wall-clock slots of a schedule in (created, end] (virtual seconds in, wall seconds out)."""
    expr = CronExpr.parse(expression)
    slots: list[float] = []
    t = EPOCH0 + created
    while (t := next_slot(expr, tz, t)) <= EPOCH0 + end:
        slots.append(t)
    return slots


@dataclass(slots=True)
class CronDriver:
    """One scheduled DAG, fired by whichever node acts as coordinator; see the module docstring."""

    world: SimWorld
    checker: Checker
    definition: DagDefinition
    gen: GenDag
    created: float
    end: float
    owner: str = "scheduler"
    #: False, as the service does (`swarm.api.scheduled.ScheduledRuns.fire_due`): a slot counts as fired
    #: only once its RunStarted came back from the broker, and is sent again until it does. True models the
    #: naive rule (count it when sent), which loses a slot whose submission the broker never took.
    trust_own_firing: bool = False
    #: Per node: (incarnation, the latest slot it fired itself in that incarnation).
    own: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: Run ids whose RunStarted was sent to the broker, with their slot.
    sent: dict[str, float] = field(default_factory=dict)
    #: Run ids whose spec reached the broker: the runs the observer follows.
    submitted: set[str] = field(default_factory=set)
    #: Every firing: run id -> [(virtual time, node, whether the spec was sent)].
    fired: dict[str, list[tuple[float, str, bool]]] = field(default_factory=dict)
    #: The run ids of the window's slots, once computed.
    window: set[str] | None = None

    @classmethod
    def create(
        cls,
        world: SimWorld,
        checker: Checker,
        dag_id: str,
        expression: str,
        catchup: str,
        created: float,
        end: float,
        shape: dict[str, Any],
    ) -> CronDriver:
        """A random DAG (`shape`: generate_dag's keyword arguments) with a CRON schedule, created at
        virtual time `created`, whose slots end at `end`."""
        doc, gen = generate_dag(random.Random(world.rng.getrandbits(32)), dag_id, **shape)
        doc["schedule"] |= {"type": "CRON", "expression": expression, "timezone": "UTC", "catchup": catchup}
        return cls(world, checker, parse_definition(doc), gen, created, end)

    @property
    def scheduled(self) -> Scheduled:
        """The schedule as the service keeps it."""
        d = self.definition
        return Scheduled(d.dag_id, d.version, d.schedule, EPOCH0 + self.created, self.owner, "admin")

    def start(self) -> None:
        """Begin consulting the planner, at a phase within the second drawn from the run's seed."""
        self.world.schedule(self.created + self.world.rng.random() * PERIOD, self._tick)

    def settled(self) -> bool:
        """Whether every slot of the window has been submitted (the run may end)."""
        return self._expected() <= self.submitted

    def _expected(self) -> set[str]:
        if self.window is None:
            slots = window_slots(self._expr, self._tz, self.created, self.end)
            self.window = {slot_run_id(self.definition.dag_id, s) for s in slots}
        return self.window

    @property
    def _expr(self) -> str:
        return self.definition.schedule.expression or ""

    @property
    def _tz(self) -> str:
        return self.definition.schedule.timezone

    def _tick(self) -> None:
        w = self.world
        for node in w.coordinators():
            self._fire_due(node)
        w.schedule(w.now + PERIOD, self._tick)

    def _last_fired(self, node: SimNode) -> float | None:
        incarnation, own = self.own.get(node.node_id, (node.incarnation, None))
        known = own if incarnation == node.incarnation else None
        if node.connected and node.link not in ("cut", "in"):
            retained = self.world.broker.retained
            heard = [slot for run_id, slot in self.sent.items() if topics.workflow_run(run_id) in retained]
            known = max([*heard, *([] if known is None else [known])], default=None)
        return known

    def _fire_due(self, node: SimNode) -> None:
        w, d = self.world, self.definition
        last = self._last_fired(node)
        now = min(EPOCH0 + w.now + node.skew, EPOCH0 + self.end)
        for due in due_runs([self.scheduled], {} if last is None else {d.dag_id: last}, now):
            job = compile_sim_run(d, due.run_id, self.owner, "schedule")
            started = RunStarted(due.run_id, d.dag_id, d.version, {}, "schedule", self.owner, now, due.slot)
            reached = w.publish_as(node.node_id, topics.workflow_run(due.run_id), started, retain=True)
            if reached:
                self.sent[due.run_id] = due.slot
            if reached or self.trust_own_firing:
                self.own[node.node_id] = (node.incarnation, max(due.slot, last or due.slot))
            spec_sent = w.publish_as(node.node_id, topics.job_spec(due.run_id), job, retain=True)
            self.fired.setdefault(due.run_id, []).append((w.now, node.node_id, spec_sent))
            if spec_sent and due.run_id not in self.submitted:
                # The observer follows the run as a submitter would, counting its tasks once.
                self.submitted.add(due.run_id)
                self.checker.tracker.track(due.run_id, len(job.tasks))
                self.checker.submitted += len(job.tasks)
                w.dags.add_run(due.run_id, self.gen)

    def check(self, jobs: dict[str, JobProgress]) -> list[str]:
        """Every slot of the window fired exactly once: submitted, and its run finished with each task
        committed once (the checker's invariant 2 counts second commits); no run outside the window."""
        d = self.definition
        expected = {
            slot_run_id(d.dag_id, s) for s in window_slots(self._expr, self._tz, self.created, self.end)
        }
        problems = []
        for run_id in sorted(expected):
            progress = jobs.get(run_id)
            if run_id not in self.submitted or progress is None:
                tries = self.fired.get(run_id, [])
                problems.append(f"slot {run_id} never fired (attempts: {tries})")
            elif progress.rejected is not None or not progress.finished:
                problems.append(f"slot {run_id} did not finish: {progress.rejected or 'tasks missing'}")
            elif progress.duplicates:
                problems.append(f"slot {run_id}: {progress.duplicates} conflicting commits")
        for run_id in sorted(set(self.fired) - expected):
            problems.append(f"{run_id} fired outside the window: {self.fired[run_id]}")
        return problems

    def stats(self) -> dict[str, int]:
        """Slots fired, and how many firings repeated a slot (the same run id submitted again)."""
        firings = Counter(len(v) for v in self.fired.values())
        return {
            "slots": len(self.fired),
            "refired": sum((n - 1) * k for n, k in firings.items()),
        }
