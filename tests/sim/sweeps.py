"""What every seed sweep of the simulator checks."""

from __future__ import annotations

from swarm.sim.runner import SimReport


def check_sweep(reports: list[SimReport]) -> None:
    """What every seed of a sweep must show: all tasks accounted for, every invariant and liveness
    checked, nothing outside the design, and a run of its own."""
    for report in reports:
        assert report.completed + report.failed == report.tasks, report
        assert report.liveness_checked and report.invariant_checks > report.events // 2
        assert not report.outside_design, (report.seed, report.outside_design[:3])
    assert len({r.trace_hash for r in reports}) == len(reports), "different seeds, different runs"
