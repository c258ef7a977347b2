"""What keeps a large cluster cheap: who follows which topics, and how many members a placement looks at.

These check behaviour, not speed; `swarm sim bench` and `swarm sim run --scenario thousand-node` measure.
"""

from __future__ import annotations

import random

import pytest

from swarm.core import placement
from swarm.core.config import CoreConfig, PlacementWeights
from swarm.core.membership import Member
from swarm.core.placement import Candidate
from swarm.core.scheduler import Scheduler
from swarm.devices.profiles import BUILTIN_PROFILES, simulated_capabilities
from swarm.messages import Heartbeat, Requirements, SubmitJob, TaskSpec
from swarm.sim.bench import scheduling_cost
from swarm.sim.world import SimWorld
from swarm.topics import EVERY_HEARTBEAT, JOB_LOG

CFG = CoreConfig(heartbeat_interval=1.0, failure_timeout=4.0, election_timeout=6.0, tick_interval=0.25)


def _patterns(world: SimWorld, node_id: str) -> set[str]:
    return set(world.broker._sessions[node_id].patterns)


def test_only_the_coordinator_follows_every_heartbeat_and_standbys_the_job_log() -> None:
    world = SimWorld(3, CFG)
    for i in range(6):
        world.add_node(f"phone-{i}", BUILTIN_PROFILES["phone"])
    for i in range(6):
        world.add_node(f"server-{i}", BUILTIN_PROFILES["server"])
    world.run_until(20.0)
    (coordinator,) = world.coordinators()
    standbys = coordinator.machine.election.standbys
    assert len(standbys) == CFG.standbys
    assert all(s.startswith("server-") for s in standbys), "mains-powered members are preferred"
    for node_id in world.nodes:
        patterns = _patterns(world, node_id)
        if node_id == coordinator.node_id:
            assert {EVERY_HEARTBEAT, JOB_LOG, "coord/in"} <= patterns
            continue
        assert EVERY_HEARTBEAT not in patterns
        assert f"node/{coordinator.node_id}/hb" in patterns
        assert (JOB_LOG in patterns) == (node_id in standbys), node_id
    # A standby takes over when the coordinator dies, and the followers move to the new coordinator.
    world.crash(coordinator.node_id)
    world.run_until(40.0)
    (successor,) = world.coordinators()
    assert successor.node_id == standbys[0]
    for node_id, node in world.nodes.items():
        if node.up and node_id != successor.node_id and node_id not in successor.machine.election.standbys:
            assert _patterns(world, node_id) & {EVERY_HEARTBEAT, JOB_LOG} == set(), node_id


def _member(node_id: str) -> Member:
    caps = simulated_capabilities(node_id, disk_free_gb=10.0)
    return Member(node_id, Heartbeat(node_id, caps, 2, 0, 0.0, 2048, 1), 0.0)


def test_placing_a_task_scores_a_bounded_sample_of_members(monkeypatch: pytest.MonkeyPatch) -> None:
    scored: list[str] = []
    score = placement.score

    def counted(c: Candidate, w: PlacementWeights, req: Requirements | None = None) -> float:
        scored.append(c.node_id)
        return score(c, w, req)

    monkeypatch.setattr(placement, "score", counted)
    s = Scheduler("c", 1, CFG, random.Random(0), lambda spec: None)
    for i in range(2000):
        s.on_member(_member(f"n{i:04d}"), 0.0)
    s.on_submit(SubmitJob("j", tuple(TaskSpec(f"t{i}", "echo", {}) for i in range(100))), 0.0)
    s.dispatch(0.0)
    assert sum(1 for t in s.tasks.values() if t.state == "running") == 100
    assert len(scored) <= 100 * CFG.placement_sample
    # The rotation spreads the work: a hundred tasks land on many different members, not on one.
    assert len({t.node for t in s.tasks.values()}) > 50


def test_the_scheduling_bench_places_every_task() -> None:
    assert scheduling_cost(20, 100) > 0
