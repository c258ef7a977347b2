"""The MAPREDUCE runtime end to end: a PYTHON step produces text, MapReduce steps (an app pushed as an
artifact, and a built-in app) count its words with several maps and reduces, and a PYTHON step reads
their partitions; checked against a plain count. Also: the contract check of a MAPREDUCE step."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from swarm.trust.authority import Authority
from tests.integration.nodes import Cluster, running
from tests.integration.test_dag_api import Api, _wait_defined, _wait_run

pytestmark = pytest.mark.network

STEPS = """
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]

def lines(shard, rows):
    # Deterministic text, one line per row: shard s, row i has words picked by (s, i).
    out = []
    for i in range(rows):
        k = shard * 7919 + i
        out.append(" ".join(WORDS[(k * j + j) % len(WORDS)] for j in range(1, 2 + k % 5)))
    return "\\n".join(out) + "\\n"

def produce(rows, shard, shards):
    return {"text": lines(shard, rows)}

def table(partitions):
    out = {}
    for text in partitions:
        for line in text.splitlines():
            word, count = line.split(" ")
            assert word not in out, word
            out[word] = int(count)
    return out

def check_one(counted, keys):
    return {"counts": table(counted)}

def check(counted, builtin, keys):
    return {"counts": table(counted), "same": table(counted) == table(builtin), "keys": keys}
"""

APP = """
def map(filename, contents):
    for word in contents.split():
        yield word, "1"

def reduce(key, values):
    return str(len(values))
"""

ROWS = 20000


def _plain_counts(rows: int = ROWS) -> Counter[str]:
    scope: dict[str, Any] = {}
    exec(STEPS, scope)
    words: Counter[str] = Counter()
    for shard in range(2):
        words.update(scope["lines"](shard, rows).split())
    return words


def _dag(dag_id: str, app: dict[str, Any], rows: int = ROWS) -> dict[str, Any]:
    python = {"artifactId": "mr-steps-v1.0", "runtime": "PYTHON"}
    return {
        "dagId": dag_id,
        "version": "1.0.0",
        "nodes": [
            {
                "nodeId": "produce",
                "taskDefinition": {
                    **python,
                    "entrypoint": "steps:produce",
                    "params": {"rows": rows},
                    "outputSchema": {"text": {"type": "STRING"}},
                },
                "executionConfig": {"parallelism": 2},
            },
            {
                "nodeId": "count",
                "type": "AGGREGATE",
                "taskDefinition": {
                    **app,
                    "runtime": "MAPREDUCE",
                    "inputSchema": {"input": {"type": "ARRAY<STRING>", "required": True}},
                    "outputSchema": {"partitions": {"type": "ARRAY<STRING>"}, "keys": {"type": "INTEGER"}},
                },
                "executionConfig": {"parallelism": 2, "reduceParallelism": 2, "timeout": "PT2M"},
            },
            {
                "nodeId": "count-builtin",
                "taskDefinition": {"entrypoint": "wordcount", "runtime": "MAPREDUCE"},
                # Three maps over two elements: the first element is cut in two at a line boundary.
                "executionConfig": {"parallelism": 3},
            },
            {
                "nodeId": "check",
                "taskDefinition": {**python, "entrypoint": "steps:check"},
            },
        ],
        "edges": [
            {"from": "produce", "to": "count", "dataMapping": {"input": "text"}},
            {"from": "produce", "to": "count-builtin", "dataMapping": {"input": "text"}},
            {"from": "count", "to": "check", "dataMapping": {"counted": "partitions", "keys": "keys"}},
            {"from": "count-builtin", "to": "check", "dataMapping": {"builtin": "partitions"}},
        ],
        "mapReduceConfig": {"enabled": True, "reduceParallelismDefault": 1, "compressionEnabled": True},
    }


@pytest.fixture(scope="module")
def pair(mosquitto_module: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("dagmr")
    with running(root, mosquitto_module, ["a", "b"]) as cluster:  # type: ignore[arg-type]
        yield cluster


def _apis(cluster: Cluster) -> list[Api]:
    token = Authority.load(cluster.cluster, home=cluster.root).admin_credential().to_token()
    status = cluster.status()
    urls = [n["api"] for n in status["nodes"] if n["api"]]
    assert len(urls) == 2, status
    return [Api(url, token) for url in urls]


def _push(api: Api, name: str, kind: str, filename: str, text: str) -> tuple[int, Any]:
    return api.call("PUT", f"/api/v1/artifacts/{name}/1.0?kind={kind}&filename={filename}", raw=text.encode())


def test_a_mapreduce_step_counts_words_between_python_steps(pair: Cluster) -> None:
    apis = _apis(pair)
    first, other = apis[0], apis[-1]
    assert _push(first, "mr-steps", "python", "steps.py", STEPS)[0] in (200, 201)
    assert _push(first, "wc-app", "mapreduce", "wc_app.py", APP)[0] in (200, 201)
    code, defined = first.call("POST", "/api/v1/dag/define", _dag("words", {"artifactId": "wc-app-v1.0"}))
    assert code == 201, defined
    assert defined["validationResults"]["isValid"], defined["validationResults"]
    _wait_defined(other, "words")
    code, started = other.call("POST", "/api/v1/dags/words/runs", {})
    assert code == 202, started
    run = _wait_run(other, started["runId"], timeout=120)
    rows = {(n["nodeId"], n["shard"]): n for n in run["nodes"]}
    assert run["state"] == "SUCCESS", [(k, n["state"], n["error"]) for k, n in rows.items()]
    # The step's own row, and its maps and reduces as parts of it.
    assert {k for k in rows if k[0].startswith("count")} == {
        ("count", 0),
        ("count.map", 0),
        ("count.map", 1),
        ("count.reduce", 0),
        ("count.reduce", 1),
        ("count-builtin", 0),
        ("count-builtin.map", 0),
        ("count-builtin.map", 1),
        ("count-builtin.map", 2),
        ("count-builtin.reduce", 0),
    }
    # The upstream's shards were large: the maps fetched them from the data plane.
    assert all(rows[("count.map", i)]["bytesIn"] > 200_000 for i in range(2))
    counted = rows[("count", 0)]["output"]
    assert counted["maps"] == 2 and counted["reduces"] == 2 and len(counted["partitions"]) == 2
    plain = _plain_counts()
    assert counted["records"] == sum(plain.values())
    out = rows[("check", 0)]["output"]
    assert out["counts"] == dict(plain)
    assert out["same"] is True and out["keys"] == len(plain)


def test_the_contract_check_refuses_a_mapreduce_step_without_an_app(pair: Cluster) -> None:
    api = _apis(pair)[0]
    assert _push(api, "mr-steps", "python", "steps.py", STEPS)[0] in (200, 201)
    code, body = _push(api, "not-an-app", "mapreduce", "steps.py", STEPS)
    assert code == 400 and "defines neither map" in body["error"], body
    for ref, reason in (
        ("mr-steps-v1.0", "is not a MapReduce app (it was pushed as python"),
        ("missing-app-v9.9", "is not in the cluster"),
    ):
        code, defined = api.call("POST", "/api/v1/dag/define", _dag(f"bad-{ref[:7]}", {"artifactId": ref}))
        assert code == 201, defined
        result = defined["validationResults"]
        assert not result["isValid"]
        assert any(e["nodeId"] == "count" and reason in e["message"] for e in result["errors"]), result


SLOW_APP = """
import time

def map(filename, contents):
    time.sleep(2.0)  # long enough for the coordinator to be killed while the maps run
    for word in contents.split():
        yield word, "1"

def reduce(key, values):
    return str(len(values))
"""


def _start(api: Api, dag: dict[str, Any]) -> str:
    """Define `dag` and start a run of it; the run id."""
    code, defined = api.call("POST", "/api/v1/dag/define", dag)
    assert code == 201 and defined["validationResults"]["isValid"], defined
    code, started = api.call("POST", f"/api/v1/dags/{dag['dagId']}/runs", {})
    assert code == 202, started
    return str(started["runId"])


def _wait_until(
    api: Api, run_id: str, ready: Callable[[dict[str, list[dict[str, Any]]]], bool]
) -> dict[str, list[dict[str, Any]]]:
    """Poll the run until `ready` holds of its step rows (by step id, in shard order); the rows."""
    deadline = time.monotonic() + 60
    while True:
        _, run = api.call("GET", f"/api/v1/runs/{run_id}")
        nodes: dict[str, list[dict[str, Any]]] = {}
        for n in sorted(run.get("nodes", ()), key=lambda n: n["shard"]):
            nodes.setdefault(n["nodeId"], []).append(n)
        if ready(nodes):
            return nodes
        assert time.monotonic() < deadline and run.get("state") not in ("SUCCESS", "FAILED"), run
        time.sleep(0.1)


def _states(nodes: dict[str, list[dict[str, Any]]], step: str) -> set[str]:
    """The states of a step's rows (its shards, maps or reduces); empty before it has any."""
    return {n["state"] for n in nodes.get(step, ())}


@pytest.fixture
def trio(mosquitto: object, tmp_path: Path) -> Iterator[Cluster]:
    with running(tmp_path, mosquitto, ["a", "b", "c"]) as cluster:  # type: ignore[arg-type]
        yield cluster


def test_a_mapreduce_step_survives_the_coordinator_killed_while_its_maps_run(trio: Cluster) -> None:
    """The run is the coordinator's job like any other: a successor adopts it, a map lost with the dead
    member runs again elsewhere (or its reducer recomputes it), and the counts are a plain computation's.

    The upstream's outputs are small enough to travel inline here (an output held by reference on the
    member that died is made again by its consumer: the test below)."""
    status = trio.status()
    coordinator = status["coordinator"]
    token = Authority.load(trio.cluster, home=trio.root).admin_credential().to_token()
    # Everything goes through a member that survives: the artifacts are served from where they were pushed.
    api = next(Api(n["api"], token) for n in status["nodes"] if n["id"] != coordinator and n["api"])
    assert _push(api, "mr-steps", "python", "steps.py", STEPS)[0] in (200, 201)
    assert _push(api, "slow-app", "mapreduce", "slow_app.py", SLOW_APP)[0] in (200, 201)
    rows = 4000
    dag = _dag("words-failover", {"artifactId": "slow-app-v1.0"}, rows)
    dag["nodes"] = [n for n in dag["nodes"] if n["nodeId"] != "count-builtin"]
    dag["edges"] = [e for e in dag["edges"] if "count-builtin" not in (e["from"], e["to"])]
    dag["nodes"][-1]["taskDefinition"]["entrypoint"] = "steps:check_one"
    run_id = _start(api, dag)
    _wait_until(api, run_id, lambda nodes: _states(nodes, "count.map") == {"RUNNING"})
    trio.by_id(coordinator).kill()
    run = _wait_run(api, run_id, timeout=120)
    steps = {(n["nodeId"], n["shard"]): n for n in run["nodes"]}
    assert run["state"] == "SUCCESS", [(k, n["state"], n["error"]) for k, n in steps.items()]
    assert trio.status()["coordinator"] != coordinator
    plain = _plain_counts(rows)
    assert steps[("count", 0)]["output"]["records"] == sum(plain.values())
    assert steps[("check", 0)]["output"]["counts"] == dict(plain)


LINEAGE_STEPS = (
    STEPS
    + """
import time

def pause(seconds):
    time.sleep(seconds)
    return {}

def count(text):
    return {"words": len(text.split())}
"""
)


def test_an_output_lost_with_the_member_that_held_it_is_made_again_by_its_consumer(trio: Cluster) -> None:
    """`make`'s text is large, so only a reference to it is committed; the member that ran `make` is
    killed before `count` needs the text, and `count` makes it again from the recipe its payload carries
    (docs/workflows.md, "Failures")."""
    token = Authority.load(trio.cluster, home=trio.root).admin_credential().to_token()
    apis = {n["id"]: Api(n["api"], token) for n in trio.status()["nodes"] if n["api"]}
    first = next(iter(apis.values()))
    assert _push(first, "lineage-steps", "python", "steps.py", LINEAGE_STEPS)[0] in (200, 201)
    python = {"artifactId": "lineage-steps-v1.0", "runtime": "PYTHON"}
    dag = {
        "dagId": "lineage",
        "version": "1.0.0",
        "nodes": [
            {
                "nodeId": "make",
                "taskDefinition": {**python, "entrypoint": "steps:produce", "params": {"rows": ROWS}},
            },
            {
                "nodeId": "hold",
                "taskDefinition": {**python, "entrypoint": "steps:pause", "params": {"seconds": 4}},
            },
            {"nodeId": "count", "taskDefinition": {**python, "entrypoint": "steps:count"}},
        ],
        "edges": [
            {"from": "make", "to": "count", "dataMapping": {"text": "text"}},
            {"from": "hold", "to": "count"},
        ],
    }
    run_id = _start(first, dag)
    made = _wait_until(first, run_id, lambda nodes: _states(nodes, "make") == {"SUCCESS"})["make"][0]
    holder = made["device"]
    assert made["outputSize"] < 1000 and made["bytesOut"] > 200_000  # committed: a reference
    trio.by_id(holder).kill()
    survivor = next(api for node_id, api in apis.items() if node_id != holder)
    run = _wait_run(survivor, run_id, timeout=120)
    steps = {n["nodeId"]: n for n in run["nodes"]}
    assert run["state"] == "SUCCESS", [(k, n["state"], n["error"]) for k, n in steps.items()]
    scope: dict[str, Any] = {}
    exec(STEPS, scope)
    assert steps["count"]["output"] == {"words": len(scope["lines"](0, ROWS).split())}
    assert steps["count"]["device"] != holder
    assert steps["count"]["bytesIn"] == 0  # made again there, not fetched
