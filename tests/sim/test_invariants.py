"""Each invariant catches a deliberately broken policy, with a replayable seed; runs are deterministic.

The breakage is monkeypatched into the real core classes for the length of one test only.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from swarm.core.election import Election
from swarm.core.membership import Member
from swarm.core.replica import Replica
from swarm.core.scheduler import Scheduler
from swarm.messages import SubmitJob, TaskUpdate
from swarm.sim.invariants import InvariantViolation
from swarm.sim.runner import run_scenario
from swarm.sim.scenario import load_scenario


def _violation(name: str, seed: int) -> str:
    with pytest.raises(InvariantViolation) as caught:
        run_scenario(load_scenario(name), seed)
    text = str(caught.value)
    assert f"replay: swarm sim replay --scenario {name} --seed {seed}" in text
    return text


def test_commit_twice_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    finish = Scheduler._finish

    def commit_twice(self: Scheduler, rec: Any, state: Any, now: float, **kw: Any) -> None:
        finish(self, rec, state, now, **kw)
        job = self.jobs[rec.job_id]
        self._log.flush(self.jobs, now, force=True)
        # A second, different outcome for the same task (restating the same one is not a violation).
        self._log.publish_again(job)  # the job is looked at again, with only this to publish:
        job.unpublished = [dataclasses.replace(job.committed[rec.task_id], attempt=rec.attempt + 1)]

    monkeypatch.setattr(Scheduler, "_finish", commit_twice)
    text = _violation("steady", 1)
    assert "committed twice" in text and "story of task" in text and "running->done" in text


def test_two_coordinators_in_one_epoch_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    on_claim = Election.on_claim

    def unstaggered(self: Election, state_of: Any) -> float:
        return 0.0  # every node takes the first turn: all claim at once

    def greedy(self: Election, sender: str, epoch: int, now: float) -> None:
        if sender == self._self_id and self._claimed_epoch == epoch:
            self._first_claim.pop(epoch, None)  # "my own claim wins", even when it came second
        on_claim(self, sender, epoch, now)

    monkeypatch.setattr(Election, "_turn_delay", unstaggered)
    monkeypatch.setattr(Election, "on_claim", greedy)
    assert "has two coordinators" in _violation("steady", 0)


def test_unstaggered_claims_alone_stay_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Safety does not rest on the stagger: simultaneous claims still elect one node per epoch."""
    monkeypatch.setattr(Election, "_turn_delay", lambda self, state_of: 0.0)
    report = run_scenario(load_scenario("coordinator-crash"), 0)
    assert report.completed == report.tasks and report.coordinator_changes >= 2


def test_lost_job_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def forgetful(self: Replica) -> list[tuple[SubmitJob, dict[str, TaskUpdate], dict[str, Any]]]:
        return []  # a successor that adopts nothing from its replica

    monkeypatch.setattr(Replica, "active", forgetful)
    assert "is unknown to the new coordinator" in _violation("coordinator-crash", 0)


def test_attempts_counted_from_scratch_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    adopt = Scheduler.adopt

    def from_scratch(self: Scheduler, job: SubmitJob, committed: Any, now: float, spent: Any = None) -> None:
        adopt(self, job, committed, now)  # a successor that ignores the attempts the job log carries

    monkeypatch.setattr(Scheduler, "adopt", from_scratch)
    assert "but the new coordinator" in _violation("dags", 0)


CRASH_ONE = """
duration = 10.0
drain = 60.0
[[devices]]
profile = "pi"
count = 8
[[workload]]
at = 3.0
jobs = 1
tasks = 400
cost = [0.2, 0.5]
[[faults]]
at = 5.0
kind = "crash"
target = "pi-0003"
"""


def test_stuck_task_is_caught(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "crash-one.toml").write_text(CRASH_ONE)
    scenario = load_scenario(tmp_path / "crash-one.toml")
    assert run_scenario(scenario, 0).completed == 400
    # A coordinator that never notices lost attempts: not when a member dies, not when it restarts.
    on_member = Scheduler.on_member

    def forgetful(self: Scheduler, member: Member, now: float) -> None:
        on_member(
            self, dataclasses.replace(member, state="suspect") if member.state == "dead" else member, now
        )

    monkeypatch.setattr(Scheduler, "on_member", forgetful)
    monkeypatch.setattr(Scheduler, "on_worker_report", lambda self, sender, report, now: None)
    with pytest.raises(InvariantViolation, match="never reached a final state") as caught:
        run_scenario(scenario, 0)
    assert "story of task" in str(caught.value) and "assigned to pi-0003" in str(caught.value)


SCRIPT = """
from swarm.sim.runner import run_scenario
from swarm.sim.scenario import load_scenario
print(run_scenario(load_scenario("partition-heal"), 5).trace_hash)
"""


def test_same_seed_same_trace_across_processes() -> None:
    first = run_scenario(load_scenario("partition-heal"), 5)
    again = run_scenario(load_scenario("partition-heal"), 5)
    assert first.trace_hash == again.trace_hash and first.events == again.events
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == first.trace_hash
    other = run_scenario(load_scenario("partition-heal"), 6)
    assert other.trace_hash != first.trace_hash
