"""The first simulator: 50 real cores, 1,000 tasks, the coordinator killed half-way, over 100 seeds."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

from swarm.sim.scenarios import SimReport, coordinator_crash

SEEDS = range(100)


def _run(seed: int) -> SimReport:
    return coordinator_crash(seed, nodes=50, tasks=1000)


def test_coordinator_crash_over_100_seeds() -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(_run, SEEDS))
    for report in reports:
        assert report.completed == report.tasks == 1000
        assert len(report.coordinators) >= 2, report
        assert report.faults, report
    # Each seed is independent, and a seed determines its run.
    assert len({r.events for r in reports}) > 1


def test_same_seed_same_run() -> None:
    a, b = coordinator_crash(7, nodes=20, tasks=200), coordinator_crash(7, nodes=20, tasks=200)
    assert (a.events, a.virtual_time, a.coordinators) == (b.events, b.virtual_time, b.coordinators)
