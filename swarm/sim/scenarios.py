"""The first scenario, kept as a function: the coordinator killed in the middle of 1,000 tasks.

The named scenarios are data (`swarm/sim/scenarios/*.toml`, run by `swarm.sim.runner`); this one stays
in code because its test sweeps 100 seeds with its own node and task counts.
"""

from __future__ import annotations

import time

from swarm.core.config import CoreConfig
from swarm.messages import SubmitJob, TaskSpec
from swarm.sim.invariants import Checker, InvariantViolation
from swarm.sim.runner import SimReport
from swarm.sim.world import SimWorld

__all__ = ["InvariantViolation", "SimReport", "coordinator_crash", "sim_config"]


def sim_config() -> CoreConfig:
    """Timeouts for simulated clusters: coarser ticks keep hundreds of nodes cheap."""
    return CoreConfig(heartbeat_interval=1.0, failure_timeout=4.0, election_timeout=6.0, tick_interval=0.25)


def coordinator_crash(seed: int, nodes: int = 50, tasks: int = 1000, jobs: int = 10) -> SimReport:
    """Kill the coordinator in the middle of `tasks` tasks; every task must still complete exactly once."""
    started = time.perf_counter()
    world = SimWorld(seed, sim_config())
    for i in range(nodes):
        world.add_node(f"n{i:03d}", speed=0.5 + world.rng.random())
    checker = Checker(world, f"coordinator_crash(seed={seed}, nodes={nodes}, tasks={tasks}, jobs={jobs})")
    world.run_until(5.0, stop=lambda: bool(world.coordinators()))
    per_job = tasks // jobs
    for j in range(jobs):
        specs = tuple(
            TaskSpec(f"j{j}-t{t}", "echo", {"i": t}, priority=world.rng.randrange(5)) for t in range(per_job)
        )
        checker.submit(SubmitJob(f"j{j}", specs, kind="batch", submitted_by="client"))
    total = per_job * jobs
    world.run_until(world.now + 60.0, stop=lambda: checker.done() >= total // 2)
    victims = world.coordinators()
    faults = []
    if victims:
        world.crash(victims[0].node_id)
        faults.append(f"{world.now:.3f} crashed coordinator {victims[0].node_id}")
    world.run_until(world.now + 120.0, stop=lambda: checker.done() >= total)
    checker.final_check()
    updates = [u for j in checker.tracker.jobs.values() for u in j.updates.values()]
    report = SimReport(
        seed=seed,
        virtual_time=world.now,
        wall_time=time.perf_counter() - started,
        events=world.events_processed,
        tasks=total,
        completed=sum(u.state == "done" for u in updates),
        failed=sum(u.state != "done" for u in updates),
        trace_hash=world.trace_hash,
        coordinators=dict(checker.acting),
        faults=faults,
        invariant_checks=checker.checks,
    )
    if report.completed != total:
        checker._violation(f"only {report.completed} of {total} tasks succeeded")
    if len(report.coordinators) < 2:
        checker._violation("no new coordinator took over")
    return report
