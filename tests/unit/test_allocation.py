"""Seed 004's allocate request: parsing with field paths, planning against members, the answer, the run."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from swarm.devices.capabilities import Taint, Toleration
from swarm.devices.profiles import simulated_capabilities
from swarm.messages import Heartbeat
from swarm.workflow.allocation import allocation_response, apply_allocation, plan_allocation
from swarm.workflow.allocation_request import AllocationRequest, parse_allocation
from swarm.workflow.compile import RunRequest, compile_run
from swarm.workflow.definition_parser import parse_definition
from swarm.workflow.fields import DefinitionError
from swarm.workflow.model import DagDefinition


def _node(node_id: str, **resources: Any) -> dict[str, Any]:
    return {
        "nodeId": node_id,
        "taskDefinition": {"runtime": "SWARM", "entrypoint": "echo"},
        "resourceRequirements": resources or {"cpuCores": 1},
    }


DAG = parse_definition(
    {
        "dagId": "sales",
        "version": "1.0.0",
        "nodes": [_node("extract"), _node("transform"), _node("analyze"), _node("report")],
        "edges": [
            {"from": "extract", "to": "transform"},
            {"from": "transform", "to": "analyze"},
            {"from": "analyze", "to": "report"},
        ],
    }
)

REQUEST: dict[str, Any] = {
    "allocationId": "alloc-1",
    "dagId": "sales",
    "executionId": "exec-1",
    "resourceRequirements": {
        "computeResources": [
            {
                "nodeId": "extract",
                "resourceProfile": "STANDARD",
                "cpuCores": 2,
                "memoryMB": 1024,
                "diskGB": 5,
                "containerImage": "enterprise/java-runtime:17-slim",
                "environmentVariables": {"LOG_LEVEL": "INFO"},
            },
            {"nodeId": "transform", "cpuCores": 2, "memoryMB": 2048, "gpuUnits": 1, "gpuType": "NVIDIA_T4"},
            {"nodeId": "analyze", "cpuCores": 2, "memoryMB": 1024},
        ],
        "storageRequirements": {"temporaryStorageGB": 500},
        "networkRequirements": {"bandwidthMbps": 1000},
    },
    "schedulingConstraints": {
        "executionDeadline": "2030-01-01T05:00:00Z",
        "nodeAffinity": [
            {"nodeId": "extract", "requiredNodeLabels": {"datacenter": "east", "security": "public"}},
            {"nodeId": "transform", "requiredNodeLabels": {"gpu-available": True}},
        ],
        "nodeAntiAffinity": [{"nodeId": "analyze", "avoidSameNodeAs": ["transform"]}],
        "tolerations": [
            {"key": "dedicated-pool", "operator": "Equal", "value": "high-priority", "effect": "NoSchedule"}
        ],
    },
    "priorityConfig": {"executionPriority": "HIGH", "preemptionAllowed": True, "queuePosition": "FRONT"},
    "monitoringConfig": {"logRetentionHours": 72},
}

POOL = Taint("dedicated-pool", "high-priority", "NoSchedule")


def hb(name: str, labels: dict[str, str], gpu: bool = False, taints: tuple[Taint, ...] = ()) -> Heartbeat:
    caps = simulated_capabilities(
        f"host-{name}",
        cores=8,
        memory_mb=8192,
        disk_free_gb=50.0,
        gpu=gpu,
        runtimes=("SWARM",),
        labels=tuple(sorted(labels.items())),
        taints=taints,
    )
    return Heartbeat(name, caps, 2, 0, 0.0, 4096, 1, api=f"http://10.0.0.{len(name)}:8470")


MEMBERS = [
    ("n-east", hb("n-east", {"datacenter": "east", "security": "public"})),
    ("n-gpu", hb("n-gpu", {"gpu-available": "true"}, gpu=True, taints=(POOL,))),
    ("n-plain", hb("n-plain", {})),
]


def test_the_seed_request_parses_with_its_constraints_and_unapplied_fields() -> None:
    req = parse_allocation(REQUEST)
    assert req.dag_id == "sales" and req.allocation_id == "alloc-1" and req.execution_id == "exec-1"
    extract = req.step("extract")
    assert extract is not None and extract.labels == (("datacenter", "east"), ("security", "public"))
    transform = req.step("transform")
    assert transform is not None and transform.labels == (("gpu-available", "true"),)
    assert transform.gpu_units == 1 and transform.avoid == ("analyze",)  # anti-affinity is symmetric
    assert req.tolerations == (Toleration("dedicated-pool", "Equal", "high-priority", "NoSchedule"),)
    assert req.priority == 1 and req.preemption_allowed
    assert req.deadline is not None and req.deadline > 1.8e9
    paths = {n.path for n in req.not_applied}
    assert {
        "monitoringConfig",
        "resourceRequirements.storageRequirements",
        "resourceRequirements.networkRequirements",
        "resourceRequirements.computeResources[0].containerImage",
        "resourceRequirements.computeResources[0].environmentVariables",
        "resourceRequirements.computeResources[1].gpuType",
        "priorityConfig.queuePosition",
    } <= paths


def _with(path: list[str | int], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(REQUEST)
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({**REQUEST, "dagId": None}, "dagId: required"),
        (
            _with(["schedulingConstraints", "executionDeadline"], "tomorrow"),
            "executionDeadline: expected an ISO",
        ),
        (_with(["schedulingConstraints", "executionDeadline"], "2030-01-01T05:00:00"), "zone is missing"),
        (
            _with(["resourceRequirements", "computeResources", 1, "cpuCores"], "many"),
            "resourceRequirements.computeResources[1].cpuCores: expected a number",
        ),
        (
            _with(["resourceRequirements", "computeResources", 2, "nodeId"], "extract"),
            "computeResources[2].nodeId: step 'extract' is listed twice",
        ),
        (
            _with(["schedulingConstraints", "tolerations", 0, "operator"], "Like"),
            "schedulingConstraints.tolerations[0].operator: expected one of Equal, Exists",
        ),
        (
            _with(["schedulingConstraints", "nodeAntiAffinity", 0, "avoidSameNodeAs"], ["analyze"]),
            "avoidSameNodeAs[0]: a step cannot avoid itself",
        ),
        (
            _with(["schedulingConstraints", "nodeAffinity", 0, "requiredNodeLabels"], {"zone": 3}),
            "nodeAffinity[0].requiredNodeLabels.zone: expected a string",
        ),
        (_with(["priorityConfig", "executionPriority"], "SOON"), "priorityConfig.executionPriority"),
        (_with(["schedulingConstraints", "colour"], "red"), "schedulingConstraints.colour: unknown field"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(DefinitionError) as info:
        parse_allocation(body)
    assert needle in str(info.value)


def test_the_plan_honours_labels_taints_and_anti_affinity() -> None:
    req = parse_allocation(REQUEST)
    plan = plan_allocation(req, DAG, MEMBERS)
    assert plan.status == "ALLOCATED"
    # extract needs east labels; transform the GPU member (its taint tolerated); analyze avoids it and
    # goes to the member with the most free slots.
    assert plan.members() == {"extract": "n-east", "transform": "n-gpu", "analyze": "n-plain"}
    kinds = {o["type"] for o in plan.optimizations}
    assert {"NODE_AFFINITY", "TAINT_TOLERATION", "LOAD_SPREADING"} <= kinds


def test_without_the_toleration_the_gpu_step_is_rejected_with_the_reason() -> None:
    body = _with(["schedulingConstraints", "tolerations"], [])
    plan = plan_allocation(parse_allocation(body), DAG, MEMBERS)
    assert plan.status == "PARTIAL"
    (rejected,) = [p for p in plan.placements if p.member is None]
    assert rejected.node_id == "transform"
    assert rejected.reason is not None and "no member satisfies" in rejected.reason
    assert plan_allocation(parse_allocation(body), DAG, []).status == "REJECTED"


def test_anti_affinity_is_kept_when_both_could_share_a_member() -> None:
    body = {
        "dagId": "sales",
        "resourceRequirements": {"computeResources": [{"nodeId": "transform"}, {"nodeId": "analyze"}]},
        "schedulingConstraints": {
            "nodeAntiAffinity": [{"nodeId": "analyze", "avoidSameNodeAs": ["transform"]}]
        },
    }
    one = [("solo", hb("solo", {}))]
    plan = plan_allocation(parse_allocation(body), DAG, one)
    assert plan.members() == {"transform": "solo"}
    analyze = next(p for p in plan.placements if p.node_id == "analyze")
    assert analyze.reason is not None and "anti-affinity with transform" in analyze.reason
    two = [*one, ("other", hb("other", {}))]
    placed = plan_allocation(parse_allocation(body), DAG, two).members()
    assert placed["transform"] != placed["analyze"]


def test_a_step_the_dag_lacks_is_an_error_naming_the_field() -> None:
    body = _with(["resourceRequirements", "computeResources", 2, "nodeId"], "nowhere")
    with pytest.raises(DefinitionError, match=r"computeResources\[2\]\.nodeId: DAG sales has no step"):
        plan_allocation(parse_allocation(body), DAG, MEMBERS)


def test_the_answer_has_the_seed_shape_and_says_capacity_is_not_held() -> None:
    req = parse_allocation(REQUEST)
    plan = plan_allocation(req, DAG, MEMBERS)
    out = allocation_response("alloc-1", req, plan, "1.0.0", "T0", "T1", "T0", "T2")
    assert out["status"] == "ALLOCATED" and out["allocationId"] == "alloc-1"
    first = out["allocatedResources"]["computeResources"][0]
    assert first == {
        "nodeId": "extract",
        "allocatedNodeId": "n-east",
        "memberName": "n-east",
        "physicalHost": "host-n-east",
        "actualResources": {"cpuCores": 2, "memoryMB": 1024, "diskGB": 5},
        "ipAddress": "10.0.0.6",
        "freeSlotsNow": 2,
    }
    assert out["reservation"]["holdsCapacity"] is False
    assert out["estimatedCompletionTime"] == "T2" and out["rejectedResources"] == []
    assert any(n["path"] == "priorityConfig.queuePosition" for n in out["notApplied"])


def _run(req: AllocationRequest, definition: DagDefinition, members: dict[str, str]) -> dict[str, Any]:
    job = compile_run(definition, RunRequest("exec-1", {}), pytest.fail)
    applied = apply_allocation(job, definition, req, members, "alloc-1")
    assert applied.meta["allocation"] == "alloc-1"
    return {spec.task_id: spec for spec in applied.tasks}


def test_applying_the_allocation_pins_steps_and_carries_the_constraints() -> None:
    req = parse_allocation(REQUEST)
    plan = plan_allocation(req, DAG, MEMBERS)
    tasks = _run(req, DAG, plan.members())
    transform = tasks["exec-1.transform"]
    assert transform.requirements.pin == ("n-gpu",)
    assert transform.requirements.avoid == ("exec-1.analyze",)
    assert transform.requirements.gpu is True and transform.requirements.min_cores == 2
    assert transform.requirements.tolerations == req.tolerations
    assert transform.priority == 1 and transform.requirements.preempt
    assert tasks["exec-1.analyze"].requirements.avoid == ("exec-1.transform",)
    # A step the allocation does not name keeps its own requirements, with the run-wide settings.
    report = tasks["exec-1.report"]
    assert report.requirements.pin == () and report.requirements.labels == ()
    assert report.requirements.tolerations == req.tolerations and report.priority == 1


def test_anti_affinity_with_a_fanned_out_step_names_every_shard() -> None:
    fanned = parse_definition(
        {
            "dagId": "fan",
            "version": "1.0.0",
            "nodes": [{**_node("a"), "executionConfig": {"parallelism": 2}}, _node("b")],
            "edges": [{"from": "a", "to": "b"}],
        }
    )
    body = {
        "dagId": "fan",
        "resourceRequirements": {"computeResources": [{"nodeId": "b"}]},
        "schedulingConstraints": {"nodeAntiAffinity": [{"nodeId": "b", "avoidSameNodeAs": ["a"]}]},
    }
    tasks = _run(parse_allocation(body), fanned, {})
    assert tasks["exec-1.b"].requirements.avoid == ("exec-1.a.0", "exec-1.a.1")
