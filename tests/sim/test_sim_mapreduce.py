"""MapReduce in the simulator: the real job shape, map outputs on simulated disks, and invariant 5.

The scenario sweep itself is in `test_scenarios.py`; here are the pieces (corpus, reference, lost map
outputs recomputed), the scenario's reach (node losses in both phases), and that a wrong output is caught
with a replayable seed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import swarm.sim.mapreduce as sim_mr
from swarm.core.config import CoreConfig
from swarm.errors import ConfigError
from swarm.mapreduce.kernels import Keys, Values, partition_of
from swarm.mapreduce.merge import merge_sorted
from swarm.mapreduce.words import tokenize_words
from swarm.messages import Assignment, TaskSpec
from swarm.sim.invariants import InvariantViolation
from swarm.sim.mapreduce import generate_corpus, reference_counts, split_corpus
from swarm.sim.runner import SimReport, run_scenario
from swarm.sim.scenario import load_scenario
from swarm.sim.simnode import SimNode
from swarm.sim.world import SimWorld

SCENARIO = "mapreduce-under-churn"
#: Seeds for the scenario's reach.
REACH_SEEDS = list(range(10))
#: A seed whose reducers recompute lost map outputs (most seeds do).
RECOMPUTING_SEED = 1


def _run(seed: int) -> SimReport:
    return run_scenario(load_scenario(SCENARIO), seed)


# --- corpus and reference -----------------------------------------------------------------------------


def test_corpus_is_deterministic_and_every_word_counts_once() -> None:
    corpus = generate_corpus(7, 5000)
    assert corpus == generate_corpus(7, 5000) != generate_corpus(8, 5000)
    reference = reference_counts(corpus)
    # Each generated word is one token: capitals, apostrophes, digits and "é" bytes do not split or merge.
    assert sum(reference.values()) == 5000
    words, counts = np.unique(tokenize_words(corpus), return_counts=True)
    assert dict(zip(words.tolist(), counts.tolist(), strict=True)) == reference
    assert any(w != w.lower() for w in corpus.split()), "some words are capitalised"


def test_splits_cover_the_corpus_at_line_ends() -> None:
    corpus = generate_corpus(1, 3000)
    splits = [split.segments[0] for split in split_corpus(corpus, 16)]
    assert len(splits) == 16 and splits[0].start == 0 and splits[-1].end == len(corpus)
    assert all(a.end == b.start for a, b in pairwise(splits))
    assert all(corpus[s.end - 1 : s.end] == b"\n" for s in splits[:-1] if s.end > s.start)


# --- the job and the tasks, driven by hand --------------------------------------------------------------


def _assignment(spec: TaskSpec, attempt: int = 1, **extra: Any) -> Assignment:
    return Assignment(spec.task_id, spec.task_id.rpartition(".")[0], attempt, spec.type, spec.payload | extra)


def _cluster() -> tuple[SimWorld, list[SimNode]]:
    world = SimWorld(3, CoreConfig(heartbeat_interval=1.0, failure_timeout=4.0, election_timeout=6.0))
    return world, [world.add_node(f"n{i}", speed=1.0) for i in range(3)]


def test_job_has_the_real_shape() -> None:
    world, _ = _cluster()
    job = world.mapreduce.submit("j", generate_corpus(0, 2000), 4, 3, (0.5, 2.0), max_retries=5)
    maps, reduces = job.tasks[:4], job.tasks[4:]
    assert [t.type for t in maps] == ["mapreduce.map"] * 4
    assert [t.type for t in reduces] == ["mapreduce.reduce"] * 3
    assert all(t.after == tuple(m.task_id for m in maps) and t.pipe for t in reduces)
    assert {t.retry.max_retries for t in job.tasks} == {5} and job.kind == "mapreduce"
    assert maps[2].payload["input"][0]["url"] == "sim://client/f/in/0"


def test_lost_map_outputs_are_recomputed_and_the_output_is_still_right() -> None:
    world, (a, b, c) = _cluster()
    mr = world.mapreduce
    corpus = generate_corpus(5, 4000)
    job = mr.submit("j", corpus, 3, 2, (1.0, 2.0))
    maps, reduces = job.tasks[:3], job.tasks[3:]
    results = []
    for spec, node in zip(maps, (a, b, c), strict=True):
        cost, finish = mr.start(node, _assignment(spec))
        assert cost == 1.0
        results.append(finish())
    assert [r["node"] for r in results] == ["n0", "n1", "n2"]
    assert len(a.files) == 2 and all(p.startswith("mr/j/m0-a1/") for p in a.files)

    # Partition 0 on n2 with every mapper up: fetched, no extra time.
    cost, finish = mr.start(c, _assignment(reduces[0], previous=results))
    assert cost == 2.0 and finish()["recomputed_maps"] == 0
    # n0 is down, n1 came back without its data dir: two map outputs cost a map's time each.
    world.crash("n0")
    world.crash("n1")
    world.restart("n1", keep_disk=False)
    assert not b.files
    cost, finish = mr.start(c, _assignment(reduces[1], previous=results))
    assert cost == 2.0 + 2 * 1.0 and finish()["recomputed_maps"] == 2
    # Back with its data dir, n0 serves its runs again.
    world.restart("n0", keep_disk=True)
    assert mr.start(c, _assignment(reduces[1], 2, previous=results))[0] == 2.0 + 1.0

    reference = reference_counts(corpus)
    counted: dict[bytes, int] = {}
    for r, (keys, values) in sorted(mr.jobs["j"].outputs.items()):
        assert (partition_of(keys, 2) == r).all()
        counted.update(zip(keys.tolist(), values.tolist(), strict=True))
    assert counted == reference

    mr.drop(a, "j")
    assert not a.files


# --- the scenario -------------------------------------------------------------------------------------


def test_reach_nodes_are_lost_in_both_phases_and_outputs_recomputed() -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(_run, REACH_SEEDS))
    for report in reports:
        assert report.completed == report.tasks, report
        assert report.mapreduce["jobs_checked"] == 1
    stats = [r.mapreduce for r in reports]
    assert sum(s["maps"] > 16 for s in stats) >= 5, "map attempts lost with their node"
    assert sum(s["reduces"] > 4 for s in stats) >= 2, "reduce attempts lost with their node"
    assert sum(s["recomputed"] > 0 for s in stats) >= 5, "reducers recomputing lost map outputs"
    assert reports[RECOMPUTING_SEED].mapreduce["recomputed"] > 0


SCRIPT = """
from swarm.sim.runner import run_scenario
from swarm.sim.scenario import load_scenario
report = run_scenario(load_scenario("mapreduce-under-churn"), 2)
print(report.trace_hash, report.mapreduce)
"""


def test_same_seed_same_run_across_processes() -> None:
    first, again = _run(2), _run(2)
    assert first.trace_hash == again.trace_hash and first.mapreduce == again.mapreduce
    env = dict(os.environ, PYTHONHASHSEED="4321")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"{first.trace_hash} {first.mapreduce}"


def _violation(seed: int) -> str:
    with pytest.raises(InvariantViolation) as caught:
        run_scenario(load_scenario(SCENARIO), seed)
    text = str(caught.value)
    assert f"replay: swarm sim replay --scenario {SCENARIO} --seed {seed}" in text
    assert "MapReduce attempts of job w0-mr0" in text and "recomputes m" in text
    return text


def test_double_counting_recompute_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    recompute = sim_mr.recompute_partition

    def double(*args: Any) -> tuple[Keys, Values]:
        keys, values = recompute(*args)
        return keys, values * 2  # a recomputed map output counted twice

    monkeypatch.setattr(sim_mr, "recompute_partition", double)
    text = _violation(RECOMPUTING_SEED)
    assert "differ from the reference word count" in text and "(reference " in text


def test_dropped_key_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def lossy(runs: list[tuple[Keys, Values]]) -> tuple[Keys, Values]:
        keys, values = merge_sorted(runs)
        return keys[1:], values[1:]  # a reducer that loses its first key

    monkeypatch.setattr(sim_mr, "merge_sorted", lossy)
    assert "differ from the reference word count" in _violation(RECOMPUTING_SEED)


def test_key_in_the_wrong_partition_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_mr, "split_sorted", lambda keys, values, reducers: [(keys, values)] * reducers)
    assert "whose hash puts it in mr-out-" in _violation(RECOMPUTING_SEED)


# --- scenario files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workload", "error"),
    [
        ('kind = "mapreduce"\nmaps = 4\nreduces = 2', "words is required"),
        ('kind = "mapreduce"\nmaps = 4\nreduces = 2\nwords = 100\ntasks = 5', "tasks does not apply"),
        ('kind = "mapreduce"\nmaps = 0\nreduces = 2\nwords = 100', "maps must be a positive integer"),
        ('kind = "mapreduce"\nmaps = 4\nreduces = 2\nwords = 100\ncost = [1]', "cost must be [map seconds"),
        ("maps = 4\ntasks = 10", "maps does not apply to kind = 'batch'"),
        ('kind = "spark"\ntasks = 10', "kind must be one of batch, mapreduce"),
    ],
)
def test_bad_mapreduce_workloads_are_refused(tmp_path: Path, workload: str, error: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[[devices]]\nprofile = "pi"\ncount = 2\n[[workload]]\nat = 1.0\n{workload}\n')
    with pytest.raises(ConfigError, match=error.replace("[", r"\[")):
        load_scenario(path)


def test_mapreduce_cost_is_map_then_reduce() -> None:
    (load,) = [w for w in load_scenario(SCENARIO).workload if w.kind == "mapreduce"]
    assert load.task_count == load.maps + load.reduces == 20
    assert load.cost[0] > 0 and load.cost[1] > 0
