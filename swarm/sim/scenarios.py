"""Scenarios: a world, a workload, faults, and the invariants checked after every step."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from swarm.core.config import CoreConfig
from swarm.core.tracker import JobTracker
from swarm.messages import Commit, Envelope, SubmitJob, TaskSpec
from swarm.sim.world import SimNode, SimWorld

__all__ = ["InvariantViolation", "SimReport", "coordinator_crash", "sim_config"]


class InvariantViolation(AssertionError):
    """An invariant failed; the message holds the seed and the story of what was involved."""


@dataclass(slots=True)
class SimReport:
    """What a run did."""

    seed: int
    virtual_time: float
    wall_time: float
    events: int
    tasks: int
    completed: int
    coordinators: dict[int, str] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)


def sim_config() -> CoreConfig:
    """Timeouts for simulated clusters: coarser ticks keep hundreds of nodes cheap."""
    return CoreConfig(heartbeat_interval=1.0, failure_timeout=4.0, election_timeout=6.0, tick_interval=0.25)


class Observer:
    """A client that submits jobs and counts every commit the way a real submitter does."""

    def __init__(self, world: SimWorld, client_id: str = "client") -> None:
        self.world = world
        self.client_id = client_id
        self.tracker = JobTracker()
        self.commits_seen: dict[str, int] = {}
        self.acting: dict[int, str] = {}
        self.completed = 0
        world.broker.connect(client_id, self._deliver, world.latency, None)
        for topic in ("election", "coord", "job/+/events"):
            world.broker.subscribe(client_id, topic)
        world.after_step.append(self._check_node)

    def submit(self, job: SubmitJob) -> None:
        """Publish the job's retained spec, as `swarm submit` does."""
        self.tracker.track(job.job_id, len(job.tasks))
        env = Envelope(1, self.world.cluster, self.client_id, 0, f"submit-{job.job_id}", job)
        self.world.broker.publish(self.client_id, f"job/{job.job_id}/spec", env, retain=True)

    def _deliver(self, topic: str, env: Envelope | None) -> None:
        if env is None:
            return
        before = self.tracker.fenced
        self.completed += len(self.tracker.on_envelope(env))
        if isinstance(env.body, Commit) and self.tracker.fenced == before:
            for update in env.body.updates:
                n = self.commits_seen[update.task_id] = self.commits_seen.get(update.task_id, 0) + 1
                if n > 1:
                    self._violation(f"task {update.task_id} committed {n} times", update.task_id)
            job = self.tracker.jobs.get(env.body.job_id)
            if job is not None and job.duplicates:
                self._violation(f"conflicting commits in job {env.body.job_id}", None)

    def _check_node(self, node: SimNode | None) -> None:
        if node is None:
            return
        epoch = node.machine.election.acting_epoch
        if epoch is not None:
            holder = self.acting.setdefault(epoch, node.node_id)
            if holder != node.node_id:
                self._violation(f"epoch {epoch} has two coordinators: {holder} and {node.node_id}", None)

    def _violation(self, what: str, task_id: str | None) -> None:
        story: list[str] = []
        for n in self.world.nodes.values():
            sched = n.machine.scheduler
            if task_id and sched is not None and task_id in sched.tasks:
                story += [f"  [{n.node_id}] {line}" for line in sched.tasks[task_id].story]
        detail = "\n".join(story[-40:] + self.world.trace[-10:])
        raise InvariantViolation(
            f"seed {self.world.seed}: {what} at t={self.world.now:.3f}\n"
            f"replay: swarm sim replay --seed {self.world.seed}\n{detail}"
        )

    def done(self) -> int:
        """Tasks with a final state."""
        return self.completed


def coordinator_crash(seed: int, nodes: int = 50, tasks: int = 1000, jobs: int = 10) -> SimReport:
    """Kill the coordinator in the middle of `tasks` tasks; every task must still complete exactly once."""
    started = time.perf_counter()
    world = SimWorld(seed, sim_config())
    for i in range(nodes):
        world.add_node(f"n{i:03d}", speed=0.5 + world.rng.random())
    observer = Observer(world)
    world.run_until(5.0, stop=lambda: bool(world.coordinators()))
    per_job = tasks // jobs
    for j in range(jobs):
        specs = tuple(
            TaskSpec(f"j{j}-t{t}", "echo", {"i": t}, priority=world.rng.randrange(5)) for t in range(per_job)
        )
        observer.submit(SubmitJob(f"j{j}", specs, kind="batch", submitted_by="client"))
    total = per_job * jobs
    world.run_until(world.now + 60.0, stop=lambda: observer.done() >= total // 2)
    victims = world.coordinators()
    faults = []
    if victims:
        world.crash(victims[0].node_id)
        faults.append(f"{world.now:.3f} crashed coordinator {victims[0].node_id}")
    world.run_until(world.now + 120.0, stop=lambda: observer.done() >= total)
    report = SimReport(
        seed=seed,
        virtual_time=world.now,
        wall_time=time.perf_counter() - started,
        events=world.events_processed,
        tasks=total,
        completed=observer.done(),
        coordinators=dict(observer.acting),
        faults=faults,
    )
    if report.completed != total:
        observer._violation(f"only {report.completed} of {total} tasks completed", None)
    not_done = [u for j in observer.tracker.jobs.values() for u in j.updates.values() if u.state != "done"]
    if not_done:
        observer._violation(f"{len(not_done)} tasks did not succeed, e.g. {not_done[0]}", not_done[0].task_id)
    if len(report.coordinators) < 2:
        observer._violation("no new coordinator took over", None)
    return report
