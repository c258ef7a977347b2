"""DAG workflows end to end: artifacts pushed and fetched peer to peer, a definition through the HTTP API,
a run with fan-out, data passing and conditions, and its history on every node."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarm.trust.authority import Authority
from tests.integration.nodes import Cluster, running

pytestmark = pytest.mark.network

STEPS = """
def extract(n):
    return {"rows": list(range(n))}

def square(rows, shard, shards):
    mine = rows[shard::shards]
    return {"part": sum(r * r for r in mine)}

def total(parts):
    return {"sum": sum(parts), "count": len(parts)}

def alarm(sum):
    raise RuntimeError("never: its edge condition is false")

def report(sum):
    return {"line": f"sum of squares is {sum}"}

def produce(size):
    return {"blob": "x" * size, "small": 1}

def consume(blob, small):
    return {"length": len(blob), "small": small}
"""

DAG: dict[str, Any] = {
    "dagId": "squares",
    "name": "Sum of squares",
    "version": "1.0.0",
    "schedule": {
        "type": "MANUAL",
        "retryPolicy": {"maxRetries": 1, "retryInterval": "PT0.2S", "backoffMultiplier": 1.5},
    },
    "nodes": [
        {
            "nodeId": "extract",
            "type": "EXTRACT",
            "taskDefinition": {
                "artifactId": "squares-steps-v1.0",
                "entrypoint": "steps:extract",
                "runtime": "PYTHON_3.11",
                "inputSchema": {"n": {"type": "INTEGER", "required": True}},
                "outputSchema": {"rows": {"type": "ARRAY<number>"}},
            },
        },
        {
            "nodeId": "square",
            "type": "TRANSFORM",
            "taskDefinition": {
                "artifactId": "squares-steps-v1.0",
                "entrypoint": "steps:square",
                "runtime": "PYTHON",
                "inputSchema": {"rows": {"type": "ARRAY<number>", "required": True}},
                "outputSchema": {"part": {"type": "NUMBER"}},
            },
            "executionConfig": {"parallelism": 3, "isMapStage": True, "timeout": "PT1M"},
        },
        {
            "nodeId": "total",
            "type": "ANALYZE",
            "taskDefinition": {
                "artifactId": "squares-steps-v1.0",
                "entrypoint": "steps:total",
                "runtime": "PYTHON",
                "inputSchema": {"parts": {"type": "ARRAY<number>", "required": True}},
                "outputSchema": {"sum": {"type": "NUMBER"}, "count": {"type": "INTEGER"}},
            },
            "executionConfig": {"isReduceStage": True},
        },
        {
            "nodeId": "alarm",
            "type": "ALERT",
            "taskDefinition": {
                "artifactId": "squares-steps-v1.0",
                "entrypoint": "steps:alarm",
                "runtime": "PYTHON",
                "inputSchema": {"sum": {"type": "NUMBER", "required": True}},
            },
        },
        {
            "nodeId": "report",
            "type": "LOAD",
            "taskDefinition": {
                "artifactId": "squares-steps-v1.0",
                "entrypoint": "steps:report",
                "runtime": "PYTHON",
                "inputSchema": {"sum": {"type": "NUMBER", "required": True}},
                "outputSchema": {"line": {"type": "STRING"}},
            },
        },
    ],
    "edges": [
        {"from": "extract", "to": "square", "dataMapping": {"rows": "rows"}, "condition": "SUCCESS"},
        {"from": "square", "to": "total", "dataMapping": {"parts": "part"}},
        {
            "from": "total",
            "to": "alarm",
            "dataMapping": {"sum": "sum"},
            "condition": "SUCCESS AND output.sum > 10000",
        },
        {"from": "total", "to": "report", "dataMapping": {"sum": "sum"}, "condition": "output.count == 3"},
    ],
}


class Api:
    """A tiny HTTP client of one node's API."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def trio(mosquitto_module: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("dag")
    with running(root, mosquitto_module, ["a", "b", "c"]) as cluster:  # type: ignore[arg-type]
        yield cluster


def _apis(cluster: Cluster) -> list[Api]:
    token = Authority.load(cluster.cluster, home=cluster.root).admin_credential().to_token()
    status = cluster.status()
    urls = [n["api"] for n in status["nodes"] if n["api"]]
    assert status["api"] in urls and len(urls) == 3, status
    return [Api(url, token) for url in urls]


def _wait_defined(api: Api, dag_id: str) -> None:
    deadline = time.monotonic() + 10
    while api.call("GET", f"/api/v1/dags/{dag_id}")[0] != 200:
        assert time.monotonic() < deadline, f"{dag_id} never reached {api.url}"
        time.sleep(0.1)


def _wait_run(api: Api, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        code, run = api.call("GET", f"/api/v1/runs/{run_id}")
        if code == 200 and run["state"] in ("SUCCESS", "FAILED", "CANCELLED"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish: {run}")


def test_a_dag_runs_across_the_cluster_with_data_conditions_and_history(
    trio: Cluster, tmp_path: Path
) -> None:
    apis = _apis(trio)
    first, other = apis[0], apis[-1]
    code, meta = first.call(
        "PUT", "/api/v1/artifacts/squares-steps/1.0?kind=python&filename=steps.py", raw=STEPS.encode()
    )
    assert code in (200, 201), meta
    code, defined = first.call("POST", "/api/v1/dag/define", DAG)
    assert code == 201, defined
    assert defined["validationResults"]["isValid"], defined
    assert defined["dataFlowAnalysis"]["criticalPath"] == ["extract", "square", "total", "report"] or defined[
        "dataFlowAnalysis"
    ]["criticalPath"][:3] == ["extract", "square", "total"]

    # Started from another node: the definition and the artifact reached it through the broker.
    _wait_defined(other, "squares")
    code, started = other.call("POST", "/api/v1/dags/squares/runs", {"params": {"n": 10}})
    assert code == 202, started
    run = _wait_run(other, started["runId"])
    assert run["state"] == "SUCCESS", [(n["nodeId"], n["state"], n["error"]) for n in run["nodes"]]
    steps = {(n["nodeId"], n["shard"]): n for n in run["nodes"]}
    assert {k: v["state"] for k, v in steps.items()} == {
        ("extract", 0): "SUCCESS",
        ("square", 0): "SUCCESS",
        ("square", 1): "SUCCESS",
        ("square", 2): "SUCCESS",
        ("total", 0): "SUCCESS",
        ("alarm", 0): "SKIPPED",
        ("report", 0): "SUCCESS",
    }
    assert steps[("total", 0)]["output"] == {"sum": 285, "count": 3}
    assert steps[("report", 0)]["output"] == {"line": "sum of squares is 285"}

    # Every node's history has the run, whichever node started or coordinated it.
    for api in apis:
        assert _wait_run(api, started["runId"], timeout=10)["state"] == "SUCCESS"


def test_large_outputs_pass_between_steps_on_the_data_plane(trio: Cluster) -> None:
    apis = _apis(trio)
    code, _ = apis[0].call(
        "PUT", "/api/v1/artifacts/big-steps/1.0?kind=python&filename=steps.py", raw=STEPS.encode()
    )
    assert code in (200, 201)
    python = {"artifactId": "big-steps-v1.0", "runtime": "PYTHON"}
    dag = {
        "dagId": "big",
        "version": "1.0.0",
        "nodes": [
            {
                "nodeId": "produce",
                "taskDefinition": {**python, "entrypoint": "steps:produce", "params": {"size": 400_000}},
            },
            {"nodeId": "consume", "taskDefinition": {**python, "entrypoint": "steps:consume"}},
        ],
        "edges": [{"from": "produce", "to": "consume", "dataMapping": {"blob": "blob", "small": "small"}}],
    }
    code, defined = apis[0].call("POST", "/api/v1/dag/define", dag)
    assert code == 201 and defined["validationResults"]["isValid"], defined
    _wait_defined(apis[-1], "big")
    code, started = apis[-1].call("POST", "/api/v1/dags/big/runs", {})
    assert code == 202, started
    run = _wait_run(apis[-1], started["runId"])
    assert run["state"] == "SUCCESS", [(n["nodeId"], n["state"], n["error"]) for n in run["nodes"]]
    steps = {n["nodeId"]: n for n in run["nodes"]}
    # The big value went by reference (its bytes never went through the broker); the small one inline.
    produced = steps["produce"]["output"]
    assert set(produced["blob"]) == {"$ref"} and produced["blob"]["$ref"]["size"] == 400_002
    assert produced["small"] == 1 and steps["produce"]["bytesOut"] == 400_002
    assert steps["consume"]["output"] == {"length": 400_000, "small": 1}
    assert steps["consume"]["bytesIn"] == 400_002


def test_a_running_dag_is_modified_and_its_steps_show_running(trio: Cluster) -> None:
    apis = _apis(trio)
    swarm = {"runtime": "SWARM"}
    dag = {
        "dagId": "modified",
        "version": "1.0.0",
        "nodes": [
            {"nodeId": "slow", "taskDefinition": {**swarm, "entrypoint": "sleep", "params": {"seconds": 2}}},
            {"nodeId": "kept", "taskDefinition": {**swarm, "entrypoint": "echo"}},
            {"nodeId": "dropped", "taskDefinition": {**swarm, "entrypoint": "echo"}},
        ],
        "edges": [{"from": "slow", "to": "kept"}, {"from": "slow", "to": "dropped"}],
    }
    api = apis[0]
    assert api.call("POST", "/api/v1/dag/define", dag)[0] == 201
    code, started = api.call("POST", "/api/v1/dags/modified/runs", {})
    assert code == 202, started
    run_id = started["runId"]
    deadline = time.monotonic() + 10
    while True:  # the first step shows RUNNING before it ends
        run = api.call("GET", f"/api/v1/runs/{run_id}")[1]
        if any(n["nodeId"] == "slow" and n["state"] == "RUNNING" for n in run["nodes"]):
            break
        assert time.monotonic() < deadline, run
        time.sleep(0.05)
    added = {
        "nodeId": "added",
        "taskDefinition": {**swarm, "entrypoint": "echo", "params": {"message": "new"}},
    }
    change = {"skip": ["dropped"], "add": {"nodes": [added], "edges": [{"from": "slow", "to": "added"}]}}
    code, answer = api.call("PATCH", f"/api/v1/runs/{run_id}", change)
    assert code == 200 and answer["added"] == ["added"], answer
    code, refused = api.call(
        "PATCH", f"/api/v1/runs/{run_id}", {"add": {"nodes": [], "edges": [{"from": "slow", "to": "kept"}]}}
    )
    assert code == 400 and refused["path"] == "add.edges", refused
    run = _wait_run(api, run_id)
    states = {n["nodeId"]: n["state"] for n in run["nodes"]}
    assert states == {"slow": "SUCCESS", "kept": "SUCCESS", "dropped": "SKIPPED", "added": "SUCCESS"}, run
    assert next(n for n in run["nodes"] if n["nodeId"] == "added")["output"] == {"message": "new"}


def test_bad_definitions_get_the_field_path_and_the_node_keeps_serving(trio: Cluster) -> None:
    api = _apis(trio)[0]
    bad = json.loads(json.dumps(DAG))
    bad["nodes"][1]["executionConfig"]["timeout"] = "soon"
    code, body = api.call("POST", "/api/v1/dag/define", bad)
    assert code == 400 and body["path"] == "nodes[1].executionConfig.timeout", body
    cyclic = json.loads(json.dumps(DAG))
    cyclic["version"] = "9.9.9"
    cyclic["edges"].append({"from": "report", "to": "extract"})
    code, body = api.call("POST", "/api/v1/dag/define", cyclic)
    assert code in (201, 400), body
    if code == 201:
        assert not body["validationResults"]["isValid"]
    code, body = api.call("POST", "/api/v1/dags/nope/runs", {})
    assert code == 404, body
    code, _ = api.call("GET", "/api/v1/dags")
    assert code == 200
