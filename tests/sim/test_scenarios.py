"""Seed sweeps of the named scenarios, with every invariant checked after every step.

Seeds run in two processes. Scenarios that currently expose a core bug (see `KNOWN_CORE_BUGS`) run their
failing seeds as strict expected failures, so the fix in the core turns them into passes that must then
be moved into the sweep.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pytest

from swarm.sim.invariants import InvariantViolation
from swarm.sim.runner import SimReport, run_scenario
from swarm.sim.scenario import load_scenario, named_scenarios

#: Seeds per scenario in CI; `swarm sim sweep --seeds 1000` goes further.
SEEDS: dict[str, list[int]] = {
    "steady": [0, 1, 2],
    "churn": [1, 2, 3, 4, 6],
    "coordinator-crash": [0, 1, 2, 3],
    "partition-heal": [0, 1, 2, 3],
    "flaky-network": [0, 1, 2, 3],
    "broker-restart": [3, 4],
}

#: (scenario, seed, the core defect it replays); described in docs/simulator.md.
KNOWN_CORE_BUGS = [
    (
        "churn",
        0,
        "a coordinator restarted within the failure timeout is never replaced; a successor "
        "that restarted after an uncheckpointed commit runs the task again",
    ),
    ("churn", 5, "the same restarted coordinator: no node ever claims, 157 tasks never finish"),
    (
        "partition-heal",
        4,
        "a node's own claim raises its gate epoch before the claim is delivered, so "
        "it fences a commit every other member counted, and re-runs it when elected",
    ),
    (
        "broker-restart",
        0,
        "a finished job whose JobState/ClearRetained was lost in the restart is "
        "accepted again from its still-retained spec and re-run",
    ),
]


def _run(job: tuple[str, int]) -> SimReport:
    name, seed = job
    return run_scenario(load_scenario(name), seed)


def test_every_named_scenario_is_swept() -> None:
    assert set(named_scenarios()) - set(SEEDS) == {"thousand-node"}


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_scenario_sweep(name: str) -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(_run, [(name, s) for s in SEEDS[name]]))
    for report in reports:
        assert report.completed + report.failed == report.tasks, report
        assert report.liveness_checked and report.invariant_checks > report.events // 2
        assert not report.outside_design, report.outside_design[:3]
    assert len({r.trace_hash for r in reports}) == len(reports), "different seeds, different runs"


@pytest.mark.parametrize(("name", "seed", "why"), KNOWN_CORE_BUGS)
def test_known_core_bug_still_caught(name: str, seed: int, why: str) -> None:
    with pytest.raises(
        InvariantViolation,
        match=rf"(?s)seed {seed}: .*replay: swarm sim replay "
        rf"--scenario {name} --seed {seed}",
    ):
        run_scenario(load_scenario(name), seed)
