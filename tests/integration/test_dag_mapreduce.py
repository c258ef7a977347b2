"""The MAPREDUCE runtime end to end: a PYTHON step produces text, MapReduce steps (an app pushed as an
artifact, and a built-in app) count its words with several maps and reduces, and a PYTHON step reads
their partitions; checked against a plain count. Also: the contract check of a MAPREDUCE step."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
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

def check(counted, builtin, keys):
    def table(partitions):
        out = {}
        for text in partitions:
            for line in text.splitlines():
                word, count = line.split(" ")
                assert word not in out, word
                out[word] = int(count)
        return out
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


def _plain_counts() -> Counter[str]:
    scope: dict[str, Any] = {}
    exec(STEPS, scope)
    words: Counter[str] = Counter()
    for shard in range(2):
        words.update(scope["lines"](shard, ROWS).split())
    return words


def _dag(dag_id: str, app: dict[str, Any]) -> dict[str, Any]:
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
                    "params": {"rows": ROWS},
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
