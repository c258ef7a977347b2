"""Resource allocation end to end: three real nodes with different labels and taints, an allocation
through the HTTP API, and a run started with it whose steps go where the allocation put them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.nodes import Cluster
from tests.integration.test_dag_api import Api, _apis, _wait_defined, _wait_run

pytestmark = pytest.mark.network


def _step(node_id: str) -> dict[str, Any]:
    return {
        "nodeId": node_id,
        "taskDefinition": {"runtime": "SWARM", "entrypoint": "echo", "params": {"step": node_id}},
    }


DAG: dict[str, Any] = {
    "dagId": "placed",
    "version": "1.0.0",
    "schedule": {"type": "MANUAL"},
    "nodes": [_step("extract"), _step("transform"), _step("analyze")],
    "edges": [{"from": "extract", "to": "transform"}, {"from": "transform", "to": "analyze"}],
}

ALLOCATE: dict[str, Any] = {
    "allocationId": "alloc-placed-1",
    "dagId": "placed",
    "executionId": "exec-placed-1",
    "resourceRequirements": {
        "computeResources": [
            {"nodeId": "extract", "cpuCores": 1, "memoryMB": 64, "containerImage": "ignored:latest"},
            {"nodeId": "transform", "cpuCores": 1, "memoryMB": 64},
            {"nodeId": "analyze", "cpuCores": 1, "memoryMB": 64},
        ]
    },
    "schedulingConstraints": {
        "nodeAffinity": [
            {"nodeId": "extract", "requiredNodeLabels": {"zone": "east"}},
            {"nodeId": "transform", "requiredNodeLabels": {"zone": "west"}},
        ],
        "nodeAntiAffinity": [{"nodeId": "analyze", "avoidSameNodeAs": ["extract", "transform"]}],
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "priorityConfig": {"executionPriority": "HIGH", "preemptionAllowed": False},
}


@pytest.fixture(scope="module")
def labelled(mosquitto_module: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("alloc"), mosquitto_module)  # type: ignore[arg-type]
    cluster.start("a", "--slots", "2", "--label", "zone=east")
    cluster.start("b", "--slots", "2", "--label", "zone=west", "--taint", "dedicated=batch:NoSchedule")
    cluster.start("c", "--slots", "2")
    try:
        cluster.wait_ready(alive=3)
        yield cluster
    finally:
        cluster.stop_all()


def _coordinator_api(cluster: Cluster) -> Api:
    """The acting coordinator's API: it follows every member's heartbeat, so it can place on all of them
    (another node sees only the coordinator and its standbys)."""
    status = cluster.status()
    api = next(n["api"] for n in status["nodes"] if n["id"] == status["coordinator"])
    return next(a for a in _apis(cluster) if a.url == api)


def _counter_eventually(cluster: Cluster, name: str, at_least: int, timeout: float = 10.0) -> bool:
    """Whether the members' counters (they travel with heartbeats) reach `at_least` of `name`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(int(n["counters"].get(name, 0)) for n in cluster.status()["nodes"]) >= at_least:
            return True
        time.sleep(0.5)
    return False


def _devices(api: Api) -> dict[str, dict[str, Any]]:
    code, devices = api.call("GET", "/api/v1/devices")
    assert code == 200, devices
    rows = devices if isinstance(devices, list) else devices.get("devices", [])
    return {d["name"]: d for d in rows if "name" in d}


def test_an_allocation_places_steps_by_labels_taints_and_anti_affinity(labelled: Cluster) -> None:
    api = _coordinator_api(labelled)
    code, defined = api.call("POST", "/api/v1/dag/define", DAG)
    assert code == 201 and defined["status"] == "CREATED", defined
    _wait_defined(api, "placed")
    names = {d["nodeId"]: name for name, d in _devices(api).items()}

    code, alloc = api.call("POST", "/api/v1/resources/allocate", ALLOCATE)
    assert code == 200, alloc
    assert alloc["status"] == "ALLOCATED", alloc["rejectedResources"]
    placed = {r["nodeId"]: r for r in alloc["allocatedResources"]["computeResources"]}
    assert {step: r["memberName"] for step, r in placed.items()} == {
        "extract": "a",
        "transform": "b",
        "analyze": "c",
    }
    assert names[placed["transform"]["allocatedNodeId"]] == "b"
    assert placed["extract"]["physicalHost"] and placed["extract"]["ipAddress"] == "127.0.0.1"
    # The slots are held by the coordinator (a retained reservation it accepts), one per placed step.
    held = alloc["reservation"]
    assert held["holdsCapacity"] is True and held["reservationId"] == "alloc-placed-1", held
    assert sorted(h["allocatedNodeId"] for h in held["heldSlots"]) == sorted(
        r["allocatedNodeId"] for r in placed.values()
    )
    assert _counter_eventually(labelled, "reservations", 1)
    assert alloc["estimatedStartTime"] and alloc["estimatedCompletionTime"]
    kinds = {o["type"] for o in alloc["optimizationApplied"]}
    assert {"NODE_AFFINITY", "TAINT_TOLERATION", "LOAD_SPREADING"} <= kinds
    assert any(n["path"].endswith("containerImage") for n in alloc["notApplied"])

    # The run started with the allocation takes its executionId and runs each step where it was put.
    code, started = api.call("POST", "/api/v1/dags/placed/runs", {"allocationId": "alloc-placed-1"})
    assert code == 202, started
    assert started["runId"] == "exec-placed-1"
    run = _wait_run(api, "exec-placed-1")
    assert run["state"] == "SUCCESS", run
    ran = {n["nodeId"]: n["device"] for n in run["nodes"]}
    assert ran == {step: r["allocatedNodeId"] for step, r in placed.items()}, (ran, placed)
    # Its steps took the held slots over; the run's end ended the reservation.
    assert _counter_eventually(labelled, "reservations_claimed", 1)
    assert _counter_eventually(labelled, "reservations_ended", 1)

    # An allocation serves one run; an unknown one is a 404.
    code, again = api.call(
        "POST", "/api/v1/dags/placed/runs", {"allocationId": "alloc-placed-1", "runId": "x-2"}
    )
    assert code == 409, again
    code, missing = api.call("POST", "/api/v1/dags/placed/runs", {"allocationId": "alloc-none"})
    assert code == 404, missing


def test_without_a_toleration_nothing_lands_on_the_tainted_member(labelled: Cluster) -> None:
    api = _coordinator_api(labelled)
    code, defined = api.call("POST", "/api/v1/dag/define", {**DAG, "version": "1.0.1"})
    assert code == 201, defined
    code, alloc = api.call(
        "POST",
        "/api/v1/resources/allocate",
        {
            "dagId": "placed",
            "resourceRequirements": {"computeResources": [{"nodeId": "transform"}]},
            "schedulingConstraints": {
                "nodeAffinity": [{"nodeId": "transform", "requiredNodeLabels": {"zone": "west"}}]
            },
        },
    )
    assert code == 200, alloc
    assert alloc["status"] == "REJECTED"
    (rejected,) = alloc["rejectedResources"]
    assert rejected["nodeId"] == "transform" and "no member satisfies" in rejected["reason"]
    # A plain run never uses b: its taint is not tolerated.
    deadline = time.monotonic() + 5
    while True:
        code, started = api.call("POST", "/api/v1/dags/placed/runs", {"version": "1.0.1"})
        if code == 202 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert code == 202, started
    run = _wait_run(api, started["runId"])
    assert run["state"] == "SUCCESS", run
    names = {d["nodeId"]: name for name, d in _devices(api).items()}
    assert "b" not in {names.get(n["device"]) for n in run["nodes"]}
