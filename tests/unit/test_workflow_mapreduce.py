"""The MAPREDUCE runtime: how a step is parsed and checked, how it becomes the engine's tasks inside the
run's job, how its input is cut into splits, and its three task types run in process."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from swarm.api.catalog import _check_app
from swarm.api.runs import final_run_state, owner_step, step_of
from swarm.api.service import _code_runtimes
from swarm.devices.probe import probe_runtimes
from swarm.errors import Fatal, InvalidSpec
from swarm.mapreduce.app import BUILTIN_APPS as ENGINE_APPS
from swarm.plugins.step_mapreduce import collect_handler, map_handler, reduce_handler, split_of
from swarm.plugins.step_runtime import artifact_store
from swarm.taskapi import DataPlane, TaskContext, TaskPolicy
from swarm.trust.roles import task_runs_code
from swarm.workflow import mrstep
from swarm.workflow.compile import ArtifactRef, RunRequest, compile_run, step_task_ids
from swarm.workflow.definition_parser import parse_definition
from swarm.workflow.fields import DefinitionError
from swarm.workflow.validate import ClusterView, validate

TOKEN = "t" * 32
APP = """
def map(filename, contents):
    for word in contents.split():
        yield word, "1"

def reduce(key, values):
    return str(len(values))
"""


def _definition(count: dict[str, Any] | None = None, mr: dict[str, Any] | None = None) -> dict[str, Any]:
    python = {"artifactId": "steps-v1.0", "runtime": "PYTHON"}
    node = {
        "nodeId": "count",
        "taskDefinition": {"artifactId": "wc-v1.0", "runtime": "MAPREDUCE"},
        "executionConfig": {"parallelism": 2, "reduceParallelism": 3},
        **(count or {}),
    }
    body: dict[str, Any] = {
        "dagId": "words",
        "version": "1.0",
        "nodes": [
            {
                "nodeId": "produce",
                "taskDefinition": {
                    **python,
                    "entrypoint": "steps:produce",
                    "outputSchema": {"text": {"type": "STRING"}},
                },
            },
            node,
            {
                "nodeId": "check",
                "taskDefinition": {
                    **python,
                    "entrypoint": "steps:check",
                    "inputSchema": {"parts": {"type": "ARRAY<STRING>", "required": True}},
                },
            },
        ],
        "edges": [
            {"from": "produce", "to": "count", "dataMapping": {"input": "text"}},
            {"from": "count", "to": "check", "dataMapping": {"parts": "partitions"}},
        ],
    }
    if mr is not None:
        body["mapReduceConfig"] = mr
    return body


def _resolve(kinds: dict[str, str]) -> Any:
    def resolve(ref: str) -> ArtifactRef:
        if ref not in kinds:
            raise DefinitionError("taskDefinition.artifactId", f"no artifact {ref!r}")
        return ArtifactRef({"name": ref, "kind": kinds[ref]}, ({"url": "http://x", "token": TOKEN},))

    return resolve


RESOLVE = _resolve({"steps-v1.0": "python", "wc-v1.0": "mapreduce"})


# --- parsing -------------------------------------------------------------------------------------------


def test_maps_default_to_mapParallelismDefault_and_reduces_to_reduceParallelismDefault() -> None:
    mr = {"enabled": True, "mapParallelismDefault": 4, "reduceParallelismDefault": 2}
    body = _definition({"executionConfig": {}}, mr)
    d = parse_definition(body)
    s = mrstep.settings(d, d.node("count"))
    assert (s.maps, s.reduces, s.compress, s.spill_threshold_mb) == (4, 2, False, None)
    own = parse_definition(_definition(mr=mr))
    assert mrstep.settings(own, own.node("count")).reduces == 3
    assert mrstep.settings(d, d.node("produce")) is not None  # settings never fail; compile decides
    plain = parse_definition(_definition({"executionConfig": {}}))
    assert (
        mrstep.settings(plain, plain.node("count")).maps,
        mrstep.settings(plain, plain.node("count")).reduces,
    ) == (
        1,
        1,
    )
    assert parse_definition(own.to_json()) == own


def test_reduce_parallelism_belongs_to_mapreduce_steps_only() -> None:
    body = _definition()
    body["nodes"][0]["executionConfig"] = {"reduceParallelism": 2}
    with pytest.raises(DefinitionError) as err:
        parse_definition(body)
    assert err.value.path == "nodes[0].executionConfig.reduceParallelism"


def test_engine_knobs_are_applied_to_mapreduce_steps_and_reported_otherwise() -> None:
    knobs = {"enabled": True, "compressionEnabled": True, "spillThresholdMB": 64, "shuffleStrategy": "HASH"}
    d = parse_definition(_definition(mr=knobs))
    s = mrstep.settings(d, d.node("count"))
    assert s.compress is True and s.spill_threshold_mb == 64
    assert [n.path for n in d.not_applied] == ["mapReduceConfig.shuffleStrategy"]
    off = parse_definition(_definition(mr={**knobs, "enabled": False}))
    assert {n.path for n in off.not_applied} >= {
        "mapReduceConfig.compressionEnabled",
        "mapReduceConfig.spillThresholdMB",
    }
    assert mrstep.settings(off, off.node("count")).compress is False
    body = _definition(mr=knobs)
    body["nodes"][1]["taskDefinition"] = {
        "artifactId": "steps-v1.0",
        "runtime": "PYTHON",
        "entrypoint": "a:b",
    }
    body["nodes"][1]["executionConfig"] = {}
    without = parse_definition(body)
    reasons = {n.path: n.reason for n in without.not_applied}
    assert "no step of this DAG runs the MAPREDUCE runtime" in reasons["mapReduceConfig.compressionEnabled"]
    staged = parse_definition(_definition({"executionConfig": {"isMapStage": True}}))
    assert [n.path for n in staged.not_applied] == ["nodes[1].executionConfig.isMapStage"]


# --- compiling -----------------------------------------------------------------------------------------


def test_a_mapreduce_step_becomes_maps_reduces_and_its_own_task_in_the_run() -> None:
    d = parse_definition(_definition(mr={"enabled": True, "compressionEnabled": True}))
    job = compile_run(d, RunRequest("words@1", {}, data_token=TOKEN), RESOLVE)
    tasks = {t.task_id: t for t in job.tasks}
    base = "words@1.count"
    ids = [f"{base}.map.0", f"{base}.map.1", f"{base}.reduce.0", f"{base}.reduce.1", f"{base}.reduce.2", base]
    assert [t for t in tasks if t.startswith(base)] == ids
    assert step_task_ids("words@1", d.node("count"), d) == tuple(ids)
    m0, r2, own = tasks[ids[0]], tasks[ids[4]], tasks[base]
    assert (m0.type, r2.type, own.type) == (mrstep.MAP_TYPE, mrstep.REDUCE_TYPE, mrstep.COLLECT_TYPE)
    # Maps take the step's edges; reduces those and every map; the step's task every reduce.
    assert m0.after == ("words@1.produce",) and m0.inflows[0].mapping == {"input": "text"}
    assert r2.after == ("words@1.produce", ids[0], ids[1])
    assert r2.inflows[1].mapping == {mrstep.MAPS_INPUT: "map"} and r2.inflows[1].condition == "SUCCESS"
    assert own.after == tuple(ids[2:5])
    # Downstream reads the step's own task, not the shards of its parts.
    assert tasks["words@1.check"].after == (base,)
    assert m0.payload["mapreduce"] == {
        "maps": 2,
        "reduces": 3,
        "compress": True,
        "spillMB": None,
        "part": "map",
        "index": 0,
    }
    assert m0.payload["artifact"]["kind"] == "mapreduce" and m0.payload["dataToken"] == TOKEN
    assert {t.requirements.runtime for t in tasks.values() if t.task_id.startswith(base)} == {"MAPREDUCE"}
    assert task_runs_code(m0.type, m0.payload) and not task_runs_code(
        m0.type, {**m0.payload, "artifact": None}
    )


def test_a_step_runs_a_builtin_app_without_an_artifact_and_nothing_else() -> None:
    d = parse_definition(_definition({"taskDefinition": {"entrypoint": "wordcount", "runtime": "MAPREDUCE"}}))
    job = compile_run(d, RunRequest("w@1", {}, data_token=TOKEN), RESOLVE)
    m0 = next(t for t in job.tasks if t.type == mrstep.MAP_TYPE)
    assert m0.payload["entrypoint"] == "wordcount" and "artifact" not in m0.payload
    assert set(mrstep.BUILTIN_APPS) <= set(ENGINE_APPS) and "sort" not in mrstep.BUILTIN_APPS
    for task in (
        {"entrypoint": "sort", "runtime": "MAPREDUCE"},
        {"artifactId": "steps-v1.0", "runtime": "MAPREDUCE"},
    ):
        bad = parse_definition(_definition({"taskDefinition": task}))
        with pytest.raises(DefinitionError):
            compile_run(bad, RunRequest("w@1", {}, data_token=TOKEN), RESOLVE)


def test_history_rows_of_a_steps_parts_and_the_runs_state() -> None:
    d = parse_definition(_definition())
    assert step_of(d, "w@1", "w@1.count") == ("count", 0)
    assert step_of(d, "w@1", "w@1.count.map.1") == ("count.map", 1)
    assert step_of(d, "w@1", "w@1.count.reduce.2") == ("count.reduce", 2)
    assert owner_step(d, "w@1", "w@1.count.reduce.2") == "count"
    assert owner_step(d, "w@1", "w@1.produce") == "produce"
    # A failed part fails the step, whose own state decides the run's.
    assert final_run_state(d, {"count.map": "failed", "count": "done"}, False) == "SUCCESS"
    assert final_run_state(d, {"count.map": "failed", "count": "failed"}, False) == "FAILED"


def test_only_mapreduce_steps_with_an_artifact_need_the_run_code_permission() -> None:
    builtin = parse_definition(
        _definition({"taskDefinition": {"entrypoint": "wordcount", "runtime": "MAPREDUCE"}})
    )
    assert _code_runtimes([builtin.node("count")]) == set()
    assert _code_runtimes(parse_definition(_definition()).nodes) == {"MAPREDUCE", "PYTHON"}


# --- the contract check ----------------------------------------------------------------------------------


def _errors(body: dict[str, Any], kinds: dict[str, str] | None = None) -> list[str]:
    kinds = {"wc-v1.0": "mapreduce"} if kinds is None else kinds
    metas = {ref: {"kind": kind} for ref, kind in kinds.items()}
    result = validate(parse_definition(body), {}, ClusterView(), None, metas.get)
    return [e.message for e in result.errors if e.node_id == "count"]


def test_the_contract_check_wants_a_mapreduce_app_and_an_input() -> None:
    assert _errors(_definition()) == []
    assert "is not in the cluster" in _errors(_definition(), {})[0]
    assert (
        "is not a MapReduce app (it was pushed as python" in _errors(_definition(), {"wc-v1.0": "python"})[0]
    )
    assert (
        "neither"
        in _errors(_definition({"taskDefinition": {"entrypoint": "sort", "runtime": "MAPREDUCE"}}))[0]
    )
    body = _definition()
    body["edges"][0]["dataMapping"] = {}
    assert "maps its input 'input'" in _errors(body)[0]
    body = _definition()
    body["nodes"][1]["taskDefinition"]["inputSchema"] = {
        "_maps": {"type": "ANY"},
        "input": {"type": "STRING"},
    }
    body["nodes"][1]["taskDefinition"]["outputSchema"] = {
        "words": {"type": "STRING"},
        "keys": {"type": "STRING"},
    }
    assert len(_errors(body)) == 3


def test_a_mapreduce_steps_partitions_are_one_list_not_a_list_per_map() -> None:
    body = _definition()
    body["nodes"][1]["taskDefinition"]["outputSchema"] = {"partitions": {"type": "ARRAY<STRING>"}}
    result = validate(parse_definition(body), {}, ClusterView(), None, {"wc-v1.0": {"kind": "mapreduce"}}.get)
    assert result.is_valid and not [w for w in result.warnings if w.node_id == "check"], result


def test_nodes_offer_mapreduce_with_the_three_step_task_types() -> None:
    three = [mrstep.MAP_TYPE, mrstep.REDUCE_TYPE, mrstep.COLLECT_TYPE]
    assert "MAPREDUCE" in probe_runtimes(three, TaskPolicy())
    assert "MAPREDUCE" not in probe_runtimes(["mapreduce.map", "mapreduce.reduce"], TaskPolicy())


def test_an_app_artifact_is_read_not_run() -> None:
    _check_app("wc.py", APP.encode())
    _check_app("vec.py", b"COMBINER = 'sum'\nfrom x import map_arrays\n")
    for filename, text, why in (
        ("wc.sh", APP, "not a module"),
        ("wc.py", "def map(f, c): pass\n", "no reduce"),
        ("wc.py", "import os\nos.system('x')\n", "neither map"),
        ("wc.py", "def map(:\n", "not valid Python"),
    ):
        with pytest.raises(InvalidSpec, match=why):
            _check_app(filename, text.encode())


# --- splits --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("elements", "maps"), [(1, 1), (5, 2), (2, 5), (3, 3), (1, 4), (0, 2)])
def test_every_piece_of_the_input_goes_to_exactly_one_map(elements: int, maps: int) -> None:
    plan = mrstep.plan_splits(elements, maps)
    assert len(plan) == maps
    pieces = sorted(p for split in plan for p in split)
    expected = sorted(
        (k, j, c) for k in range(elements) for c in {p[2] for p in pieces if p[0] == k} for j in range(c)
    )
    assert pieces == expected and {p[0] for p in pieces} == set(range(elements))
    if elements < maps and elements:
        assert all(len(split) == 1 for split in plan)


def test_cutting_covers_the_data_once_and_splits_no_line() -> None:
    data = b"".join(f"line {i} {'x' * (i % 7)}\n".encode() for i in range(50))
    for pieces in (1, 2, 3, 7, 60):
        parts = [mrstep.cut(data, j, pieces) for j in range(pieces)]
        assert b"".join(parts) == data
        assert all(part.endswith(b"\n") for part in parts if part)
    assert mrstep.cut(b"no newline at all", 1, 2) == b""


def test_a_maps_split_comes_from_the_inputs_it_is_given() -> None:
    payload = {"dataToken": TOKEN, "inputs": {"input": ["a b\nc\n", "d\n", "e\n"]}}
    assert split_of(payload, 0, 2) == ([("input-0", b"a b\nc\n")], 0)
    assert split_of(payload, 1, 2) == ([("input-1", b"d\n"), ("input-2", b"e\n")], 0)
    named = {"dataToken": TOKEN, "inputs": {"input": {"x.txt": "1\n2\n", "y.txt": ["3", 4]}}}
    assert split_of(named, 1, 2) == ([("y.txt", b"3\n4\n")], 0)
    assert split_of({"inputs": {"input": "a\nb\n"}}, 1, 2) == ([("input", b"b\n")], 0)
    with pytest.raises(Fatal, match="input named 'input'"):
        split_of({"inputs": {}}, 0, 1)


# --- the three task types, in process ---------------------------------------------------------------------


def _context(tmp_path: Path, task_id: str) -> TaskContext:
    work = tmp_path / "work" / task_id
    work.mkdir(parents=True, exist_ok=True)
    return TaskContext(
        "n1", task_id, 1, str(work), TaskPolicy(), DataPlane(str(tmp_path / "data"), "http://127.0.0.1:9")
    )


@pytest.mark.parametrize("app", ["artifact", "wordcount"])
def test_maps_reduces_and_the_collector_count_words_like_a_plain_count(tmp_path: Path, app: str) -> None:
    text = ["the cat sat on the mat\nthe end\n", "a cat and a dog\n", "dog days\n"]
    base: dict[str, Any] = {"run": "w@1", "step": "count", "params": {}, "dataToken": TOKEN}
    if app == "artifact":
        meta = artifact_store(_context(tmp_path, "x")).put(
            "wc", "1.0", "mapreduce", "wc.py", APP.encode(), 0.0, "u"
        )
        base |= {"entrypoint": "", "artifact": meta.to_json(), "sources": []}
    else:
        base |= {"entrypoint": "wordcount"}
    config = {"maps": 2, "reduces": 2, "compress": True, "spillMB": 1}
    maps = []
    for i in range(2):
        p = {**base, "inputs": {"input": text}, "mapreduce": {**config, "part": "map", "index": i}}
        map_handler.validate(p)
        maps.append(map_handler.run(_context(tmp_path, f"m{i}"), p)["outputs"]["map"])
    reduced = []
    for r in range(2):
        p = {
            **base,
            "inputs": {"input": text, "_maps": maps},
            "mapreduce": {**config, "part": "reduce", "index": r},
        }
        reduce_handler.validate(p)
        reduced.append(reduce_handler.run(_context(tmp_path, f"r{r}"), p)["outputs"])
    p = {
        **base,
        "inputs": {
            "_partition": [o["partition"] for o in reduced],
            "_keys": [o["keys"] for o in reduced],
            "_records": [o["records"] for o in reduced],
        },
        "mapreduce": {**config, "part": "collect"},
    }
    collect_handler.validate(p)
    out = collect_handler.run(_context(tmp_path, "c"), p)["outputs"]
    counted = {}
    for part in out["partitions"]:
        for line in part.splitlines():
            word, n = line.split(" ")
            counted[word] = int(n)
    plain = Counter(" ".join(text).split())
    assert counted == dict(plain)
    assert out["keys"] == len(plain) and out["reduces"] == 2
    # The record app emits a pair per word; wordcount's map counts its split's words itself, across
    # the split's texts (the first map's two share "cat").
    assert out["records"] == (sum(plain.values()) if app == "artifact" else 6 + 4 - 1 + 2)


def test_a_reducer_recomputes_a_map_whose_output_is_gone(tmp_path: Path) -> None:
    text = ["x y x\n", "y z\n"]
    base: dict[str, Any] = {
        "run": "w@1",
        "step": "s",
        "params": {},
        "dataToken": TOKEN,
        "entrypoint": "wordcount",
    }
    config = {"maps": 2, "reduces": 1, "compress": False, "spillMB": None}
    maps = [
        map_handler.run(
            _context(tmp_path, f"m{i}"),
            {**base, "inputs": {"input": text}, "mapreduce": {**config, "part": "map", "index": i}},
        )["outputs"]["map"]
        for i in range(2)
    ]
    lost = {**maps[1], "node": "gone", "url": "http://127.0.0.1:9"}
    p = {
        **base,
        "inputs": {"input": text, "_maps": [maps[0], lost]},
        "mapreduce": {**config, "part": "reduce", "index": 0},
    }
    out = reduce_handler.run(_context(tmp_path, "r0"), p)["outputs"]
    assert out["partition"] == "x 2\ny 2\nz 1\n" and out["recomputedMaps"] == 1


def test_a_range_partitioned_app_is_refused_with_the_reason(tmp_path: Path) -> None:
    ctx = _context(tmp_path, "m0")
    source = "PARTITIONER = 'range'\ndef sample_keys(d, p): return []\n"
    source += "def map(f, c): return []\nCOMBINER = 'sum'\n"
    meta = artifact_store(ctx).put("ranged", "1.0", "mapreduce", "ranged.py", source.encode(), 0.0, "u")
    p = {
        "run": "w@1",
        "step": "s",
        "params": {},
        "dataToken": TOKEN,
        "entrypoint": "",
        "artifact": meta.to_json(),
        "sources": [],
        "inputs": {"input": "a\n"},
        "mapreduce": {"maps": 1, "reduces": 1, "part": "map", "index": 0},
    }
    with pytest.raises(Fatal, match="partitions by range"):
        map_handler.run(ctx, p)
