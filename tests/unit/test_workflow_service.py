"""The node's workflow service without a network: what it publishes, what it records, what it refuses."""

from __future__ import annotations

import asyncio
import calendar
from pathlib import Path
from typing import Any

import pytest

from swarm.api.auth import ApiUser
from swarm.api.backend import Conflict, Forbidden, NotFound, iso_time
from swarm.api.history import History
from swarm.api.service import WorkflowService
from swarm.core.membership import Member
from swarm.devices.profiles import simulated_capabilities
from swarm.messages import (
    RESERVATION_KIND,
    ArtifactPublished,
    Body,
    Commit,
    DagDefined,
    Envelope,
    Heartbeat,
    JobState,
    NodeGone,
    RunStarted,
    SubmitJob,
    TaskUpdate,
)
from swarm.runtime.artifacts import ArtifactStore
from swarm.workflow.allocation import DEFAULT_HOLD_S, MAX_HOLD_S

OPERATOR = ApiUser("u-op", "user", "operator")
SUBMITTER = ApiUser("u-sub", "user", "submitter")


class FakeNode:
    """A node as the service sees it: records what it publishes, holds a fixed membership."""

    node_id = "n-1"

    def __init__(self) -> None:
        self.published: list[tuple[str, Body, bool]] = []
        self.cleared: list[str] = []
        self.subscribed: list[str] = []
        self.calls: list[str] = []  # publishes and subscriptions, in order
        self.is_acting = True
        caps = simulated_capabilities("h1", disk_free_gb=10.0, runtimes=("PYTHON", "SWARM"))
        self.member = Member("n-1", Heartbeat("h1", caps, 2, 0, 0.1, 2048, 1), 0.0)

    def publish(self, topic: str, body: Body, retain: bool = False) -> None:
        self.published.append((topic, body, retain))
        self.calls.append(f"publish {topic}")

    async def subscribe(self, *topics: str) -> None:
        self.subscribed.extend(topics)
        self.calls.extend(f"subscribe {topic}" for topic in topics)

    async def unsubscribe(self, *topics: str) -> None:
        self.subscribed = [t for t in self.subscribed if t not in topics]

    def status(self) -> dict[str, Any]:
        return {"node": self.node_id}

    def acting(self) -> bool:
        return self.is_acting

    def clear(self, topic: str) -> None:
        self.cleared.append(topic)

    def bodies(self, kind: type) -> list[Any]:
        return [body for _, body, _ in self.published if isinstance(body, kind)]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path) -> tuple[WorkflowService, FakeNode, Clock]:
    node = FakeNode()
    clock = Clock(1_800_000_000.0)
    source = {"url": "http://127.0.0.1:1/f/x", "token": "t" * 32}
    service = WorkflowService(
        node, History(":memory:"), ArtifactStore(tmp_path / "art"), lambda _: source, clock
    )
    return service, node, clock


async def heard(service: WorkflowService, node: FakeNode) -> None:
    """The member's heartbeat reaches the service (which follows heartbeats while the API is in use)."""
    await service.on_message("node/n-1/hb", Envelope(1, "c", "n-1", 1, "hb", node.member.heartbeat))


def dag(version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    python = {"artifactId": "steps-v1.0", "runtime": "PYTHON"}
    return {
        "dagId": "d",
        "version": version,
        "nodes": [
            {"nodeId": "a", "taskDefinition": {**python, "entrypoint": "steps:a"}},
            {"nodeId": "b", "taskDefinition": {**python, "entrypoint": "steps:b"}},
            {"nodeId": "on_fail", "taskDefinition": {**python, "entrypoint": "steps:c"}},
        ],
        "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": "on_fail", "condition": "FAILURE"}],
        **extra,
    }


async def test_define_publishes_an_immutable_version_with_its_analysis(setup: Any) -> None:
    service, node, _ = setup
    await heard(service, node)
    answer = await service.define_dag(dag(), OPERATOR)
    assert answer["status"] == "CREATED" and answer["validationResults"]["isValid"]
    assert answer["dataFlowAnalysis"]["criticalPath"][0] == "a"
    (record,) = node.bodies(DagDefined)
    assert record.dag_id == "d" and record.role == "operator"
    assert (await service.get_dag("d", None))["version"] == "1.0.0"
    await service.define_dag(dag(), OPERATOR)  # the same body again: fine
    changed = dag()
    changed["nodes"][1]["taskDefinition"]["entrypoint"] = "steps:other"
    with pytest.raises(Conflict):
        await service.define_dag(changed, OPERATOR)


async def test_a_run_needs_run_code_and_becomes_one_job(setup: Any, tmp_path: Path) -> None:
    service, node, _ = setup
    await heard(service, node)
    await service.push_artifact("steps", "1.0", "python", "steps.py", b"def a(): return {}\n", OPERATOR)
    assert node.bodies(ArtifactPublished)
    await service.define_dag(dag(), OPERATOR)
    with pytest.raises(Forbidden, match="run_code"):
        await service.start_run("d", {}, SUBMITTER)
    with pytest.raises(NotFound):
        await service.start_run("nope", {}, OPERATOR)
    run = await service.start_run("d", {"runId": "d@1"}, OPERATOR)
    (job,) = node.bodies(SubmitJob)
    assert job.job_id == "d@1" == run["runId"] and job.kind == "dag" and len(job.tasks) == 3
    assert job.submitted_by == "u-op" and job.meta["dag"] == "d"
    assert "job/d@1/commits/+" in node.subscribed
    # The node follows the run's events before the job exists: they are not retained.
    assert node.calls.index("subscribe job/d@1/events") < node.calls.index("publish job/d@1/spec")
    again = await service.start_run("d", {"runId": "d@1"}, OPERATOR)
    assert again["existing"] and len(node.bodies(SubmitJob)) == 1


def _envelope(body: Body) -> Envelope:
    return Envelope(1, "c", "n-2", 1, "m", body)


async def test_commits_become_history_and_a_handled_failure_does_not_fail_the_run(setup: Any) -> None:
    service, _, _ = setup
    await service.define_dag(dag(), OPERATOR)
    await service.on_message(
        "wf/run/r1", _envelope(RunStarted("r1", "d", "1.0.0", {}, "manual", "u-op", 5.0))
    )
    updates = (
        TaskUpdate("r1.a", "failed", 2, "n-2", None, "fatal: boom", 5.0, 6.0),
        TaskUpdate("r1.b", "failed", 0, None, None, "upstream r1.a failed", 0.0, 0.0),
        TaskUpdate("r1.on_fail", "done", 1, "n-2", {"outputs": {"ok": True}}, None, 6.0, 7.0),
    )
    await service.on_message("job/r1/commits/1.0", _envelope(Commit("r1", updates)))
    await service.on_message("job/r1/state", _envelope(JobState("r1", 3)))
    run = await service.get_run("r1")
    assert run is not None
    # a's failure is handled (its FAILURE edge ran on_fail), but b failed with it and nothing handles b.
    assert run["state"] == "FAILED"
    assert {n["nodeId"]: n["state"] for n in run["nodes"]} == {
        "a": "FAILED",
        "b": "FAILED",
        "on_fail": "SUCCESS",
    }


async def test_a_cron_schedule_fires_each_slot_once(setup: Any) -> None:
    service, node, clock = setup
    await service.push_artifact("steps", "1.0", "python", "steps.py", b"def a(): return {}\n", OPERATOR)
    schedule = {"type": "CRON", "expression": "*/5 * * * *", "timezone": "UTC", "catchup": "ALL"}
    clock.now = calendar.timegm((2027, 1, 1, 0, 0, 0))
    await service.define_dag(dag(schedule=schedule), OPERATOR)
    assert await service.schedules.fire_due() == []  # defined exactly at a slot: nothing missed yet
    clock.now += 11 * 60
    assert await service.schedules.fire_due() == ["d@20270101T0005Z", "d@20270101T0010Z"]
    assert await service.schedules.fire_due() == []
    fired = ["d@20270101T0005Z", "d@20270101T0010Z"]
    assert [job.job_id for job in node.bodies(SubmitJob)] == fired
    # Their records never came back from the broker: after a while they are sent again, same run ids.
    clock.now += 10
    assert await service.schedules.fire_due() == []
    assert [job.job_id for job in node.bodies(SubmitJob)] == fired + fired
    for started in node.bodies(RunStarted)[:2]:  # now the broker echoes them: confirmed, never resent
        await service.on_message(f"wf/run/{started.run_id}", _envelope(started))
    clock.now += 10
    await service.schedules.fire_due()
    assert len(node.bodies(SubmitJob)) == 4
    # A successor that only saw the retained RunStarted records continues after them.
    successor = WorkflowService(node, service._history, service.catalog.store, lambda _: {}, clock)
    await successor.on_message("wf/dag/d/1.0.0", _envelope(node.bodies(DagDefined)[0]))
    for started in node.bodies(RunStarted):
        await successor.on_message(f"wf/run/{started.run_id}", _envelope(started))
    clock.now += 5 * 60
    # The artifact is unknown to it: refused, logged, not fired.
    assert await successor.schedules.fire_due() == []
    assert successor.schedules.last_fired["d"] == calendar.timegm((2027, 1, 1, 0, 15, 0))


async def test_devices_follow_heartbeats_only_while_the_api_is_used(setup: Any) -> None:
    service, node, clock = setup
    events = service.subscribe()
    first = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    assert "node/+/hb" in node.subscribed  # a stream client needs every member
    await heard(service, node)
    service.members.watch()
    event = await asyncio.wait_for(first, 2)
    assert event["type"] == "device" and event["nodeId"] == "n-1" and event["state"] == "alive"
    service.members.watch()  # nothing changed: no event
    await service.on_message("node/n-1/hb", Envelope(1, "c", "n-1", 1, "bye", NodeGone("left")))
    service.members.watch()
    assert (await asyncio.wait_for(anext(events), 1))["state"] == "dead"
    await events.aclose()
    clock.now += 301  # idle, no stream: heartbeats are no longer followed
    await service.members.forget_if_idle()
    assert "node/+/hb" not in node.subscribed


async def test_retention_forgets_old_runs_and_clears_their_records(setup: Any) -> None:
    service, node, clock = setup
    await service.define_dag(dag(globalConfigs={"dataRetentionPolicy": "KEEP_1_DAYS"}), OPERATOR)
    service._history.put_run("old", "d", "1.0.0", "SUCCESS", 0.0, 0.0, clock.now - 2 * 86_400)
    service._history.put_run("new", "d", "1.0.0", "SUCCESS", 0.0, 0.0, clock.now - 3600)
    assert await service.apply_retention() == ["old"]
    assert node.cleared == ["wf/run/old"]


async def test_an_allocation_publishes_a_reservation_and_its_run_names_it(setup: Any) -> None:
    service, node, clock = setup
    await heard(service, node)
    await service.push_artifact("steps", "1.0", "python", "steps.py", b"def a(): return {}\n", OPERATOR)
    await service.define_dag(dag(), OPERATOR)
    body = {
        "dagId": "d",
        "allocationId": "alloc-1",
        "resourceRequirements": {
            "computeResources": [{"nodeId": "a", "cpuCores": 1}, {"nodeId": "b", "cpuCores": 1}]
        },
    }
    answer = await service.allocate(body, OPERATOR)
    held = answer["reservation"]
    assert held["holdsCapacity"] is True and held["reservationId"] == "alloc-1"
    assert held["heldSlots"] == [{"allocatedNodeId": "n-1", "slots": 2}]  # two steps, two slots
    (spec,) = [(t, b, r) for t, b, r in node.published if t == "job/alloc-1/spec"]
    reservation = spec[1]
    assert spec[2] and reservation.kind == RESERVATION_KIND and reservation.submitted_by == "u-op"
    assert reservation.expires == clock.now + DEFAULT_HOLD_S
    with pytest.raises(Conflict):  # its slots are held under that id until it expires
        await service.allocate(body, OPERATOR)
    await service.start_run("d", {"allocationId": "alloc-1", "runId": "d@2"}, OPERATOR)
    (run,) = [b for b in node.bodies(SubmitJob) if b.job_id == "d@2"]
    assert run.meta["allocation"] == "alloc-1"
    assert {t.requirements.pin for t in run.tasks if not t.task_id.endswith("on_fail")} == {("n-1",)}
    # A deadline beyond the longest hold is cut to it.
    late = {
        **body,
        "allocationId": "alloc-2",
        "schedulingConstraints": {"executionDeadline": "2099-01-01T00:00:00Z"},
    }
    assert (await service.allocate(late, OPERATOR))["expiresAt"] == iso_time(clock.now + MAX_HOLD_S)
