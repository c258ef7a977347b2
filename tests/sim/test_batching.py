"""The simulated nodes step as the shell does: what has arrived is handled in one `handle_many` call,
up to a limit each seed chooses, so that the sweeps run the batching path the real node runs."""

from __future__ import annotations

from swarm.core.node import MAX_BATCH
from swarm.sim.cpu import CpuModel
from swarm.sim.runner import run_scenario
from swarm.sim.scenario import load_scenario
from swarm.sim.simnode import BATCHED
from swarm.sim.world import BATCH_LIMITS, SimNode, SimWorld


def test_seeds_choose_every_batch_limit_and_shared_cpus_take_the_shells() -> None:
    config = load_scenario("steady").core_config()
    assert {SimWorld(seed, config).batch_limit for seed in range(60)} == set(BATCH_LIMITS)
    assert SimWorld(0, config, cpu=CpuModel()).batch_limit == MAX_BATCH
    assert SimWorld(0, config, batch_limit=8).batch_limit == 8


def _largest_step(limit: int, seed: int) -> tuple[int, str, int]:
    largest = 0

    def setup(world: SimWorld) -> None:
        world.batch_limit = limit

        def note(node: SimNode | None) -> None:
            nonlocal largest
            if node is not None:
                run = 0
                for _, _, effects in node.log:
                    run = run + 1 if effects == BATCHED else 0
                    largest = max(largest, run + 1)

        world.after_step.append(note)

    report = run_scenario(load_scenario("churn"), seed, setup=setup)
    assert report.completed + report.failed == report.tasks, report
    return largest, report.trace_hash, report.batch_limit


def test_steps_take_what_waits_up_to_the_limit_and_runs_stay_deterministic() -> None:
    for limit in (1, 8, MAX_BATCH):
        largest, trace, reported = _largest_step(limit, seed=5)
        assert reported == limit
        assert 1 <= largest <= limit
        if limit > 1:
            assert largest > 1, "no step ever took more than one event"
        assert _largest_step(limit, seed=5)[1] == trace
