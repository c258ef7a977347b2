"""Issue 16 in the simulator: fifty nodes on one saturated two-core host, the coordinator killed mid-batch.

The `overload` scenario models shared CPUs (`swarm.sim.cpu`): every step costs CPU time on the one host,
so every node's events and its own ticks are handled late. With the loop lag and the roster's size
reported to the core (as the shell reports them) a successor acts within seconds over 200 seeds; with
both hidden, the core cannot tell that it is itself late nor pace its heartbeats and claims by the
cluster's size, and the stall of the issue comes back.
"""

from __future__ import annotations

import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from swarm.sim.invariants import InvariantViolation
from swarm.sim.runner import run_scenario
from swarm.sim.scenario import load_scenario
from swarm.sim.world import SimNode, SimWorld

SEEDS = 200
#: When the scenario kills the coordinator (`faults[0].at` of overload.toml).
CRASH_AT = load_scenario("overload").faults[0].at
#: The issue's bound: a new coordinator acts within 30 s of the kill.
FAILOVER_BOUND = 30.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one seed did: whether every task completed, and how long the first successor took."""

    seed: int
    complete: bool
    failover: float | None
    epochs: int
    max_lag: float


def _run(seed: int, aware: bool = True) -> Outcome:
    acted: dict[int, float] = {}
    worlds: list[SimWorld] = []

    def setup(world: SimWorld) -> None:
        world.report_lag = world.report_roster = aware
        worlds.append(world)

        def note(node: SimNode | None) -> None:
            if node is not None and node.machine.election.acting_epoch is not None:
                acted.setdefault(node.machine.election.acting_epoch, world.now)

        world.after_step.append(note)

    try:
        report = run_scenario(load_scenario("overload"), seed, setup=setup)
        complete = report.completed == report.tasks and not report.outside_design
    except InvariantViolation:
        complete = False
    later = [at - CRASH_AT for at in acted.values() if at > CRASH_AT]
    max_lag = max(n.max_lag for n in worlds[0].nodes.values())
    return Outcome(seed, complete, min(later) if later else None, len(acted), max_lag)


def _run_blind(seed: int) -> Outcome:
    return _run(seed, aware=False)


def test_overload_fails_over_within_bound_over_200_seeds() -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(_run, range(SEEDS), chunksize=10))
    failovers = [o.failover for o in outcomes if o.failover is not None]
    assert all(o.complete for o in outcomes), [o for o in outcomes if not o.complete][:3]
    assert len(failovers) == SEEDS, [o for o in outcomes if o.failover is None][:3]
    assert max(failovers) <= FAILOVER_BOUND, max(failovers)
    # Degraded, not stopped: the host really is saturated (loops seconds late), yet failover takes
    # seconds, and nobody is deposed by a false suspicion (the first coordinator and one successor).
    assert statistics.median(failovers) < 8.0, statistics.median(failovers)
    assert statistics.median(o.max_lag for o in outcomes) > 2.0
    assert max(o.epochs for o in outcomes) <= 3, max(o.epochs for o in outcomes)


def test_without_its_loop_lag_the_core_stalls_as_in_the_issue() -> None:
    """The same runs with the lag and the roster's size hidden from the core: false deaths, piled-up
    claims, slow or no failover."""
    outcomes = [_run_blind(seed) for seed in range(4)]
    bad = [o for o in outcomes if not o.complete or o.failover is None or o.failover > 8.0 or o.epochs > 3]
    assert len(bad) >= 3, outcomes


def test_overload_scenario_is_deterministic() -> None:
    assert _run(3) == _run(3)
