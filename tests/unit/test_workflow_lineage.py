"""Lineage recipes: which upstream task, with which payload, makes each referenced input again."""

from __future__ import annotations

from typing import Any

from swarm.core.jobs import piped_payload
from swarm.messages import Inflow, TaskSpec, TaskUpdate
from swarm.workflow.lineage import MAX_RECIPE_BYTES, REF_KEY, recipes

URL = "http://10.0.0.7:8000/f/mr/r/out/r.make.1.blob.json"


def _ref(url: str = URL) -> dict[str, Any]:
    return {REF_KEY: {"url": url, "sha256": "0" * 64, "size": 300_000}}


def _step(task_id: str, kind: str = "step.python", **payload: Any) -> TaskSpec:
    return TaskSpec(task_id=task_id, type=kind, payload={"entrypoint": "s:f", "inputs": {}, **payload})


def _use(*flows: Inflow, kind: str = "step.python") -> TaskSpec:
    after = tuple(s for flow in flows for s in flow.sources)
    return TaskSpec(task_id="r.use", type=kind, payload={"entrypoint": "s:g"}, after=after, inflows=flows)


def _made(spec: TaskSpec, specs: dict[str, TaskSpec], committed: dict[str, TaskUpdate]) -> dict[str, Any]:
    return recipes(spec, specs, committed, lambda s: piped_payload(s, committed))


def test_a_referenced_input_gets_the_recipe_of_the_task_that_made_it() -> None:
    make = _step("r.make", params={"n": 3})
    small = _step("r.small")
    committed = {
        "r.make": TaskUpdate("r.make", "done", 1, "n1", {"outputs": {"blob": _ref(), "count": 3}}),
        "r.small": TaskUpdate("r.small", "done", 1, "n2", {"outputs": {"x": 1}}),
    }
    use = _use(
        Inflow(("r.make",), mapping={"data": "blob", "k": "count"}), Inflow(("r.small",), mapping={"x": "x"})
    )
    made = _made(use, {"r.make": make, "r.small": small}, committed)
    # Only the reference has a recipe: the inline values travel in the commit itself.
    assert made == {
        URL: {
            "task": "r.make",
            "type": "step.python",
            "output": "blob",
            "payload": piped_payload(make, committed),
        }
    }


def test_no_recipe_where_a_consumer_could_not_use_it_or_an_upstream_cannot_run_again() -> None:
    committed = {"r.make": TaskUpdate("r.make", "done", 1, "n1", {"outputs": {"blob": _ref()}})}
    flow = Inflow(("r.make",), mapping={"data": "blob"})
    # A built-in task type gets the reference as it is, and fetches nothing.
    assert _made(_use(flow, kind="echo"), {"r.make": _step("r.make")}, committed) == {}
    # A MAPREDUCE collector's partitions come from its reduces, not from a payload that makes them.
    assert _made(_use(flow), {"r.make": _step("r.make", kind="step.mapreduce.collect")}, committed) == {}
    # An output not mapped into this step is not this step's concern.
    other = Inflow(("r.make",), mapping={"data": "other"})
    assert _made(_use(other), {"r.make": _step("r.make")}, committed) == {}
    # An upstream whose payload is too large to carry is left out.
    huge = _step("r.make", params={"text": "x" * MAX_RECIPE_BYTES})
    assert _made(_use(flow), {"r.make": huge}, committed) == {}


def test_each_shard_of_a_fanned_out_upstream_has_its_own_recipe() -> None:
    urls = [f"http://n{i}:1/f/mr/r/out/s{i}.json" for i in range(3)]
    shards = {f"r.make.{i}": _step(f"r.make.{i}", shard=i, shards=3) for i in range(3)}
    committed = {
        t: TaskUpdate(t, "done", 1, f"n{i}", {"outputs": {"blob": _ref(urls[i])}})
        for i, t in enumerate(shards)
    }
    made = _made(_use(Inflow(tuple(shards), mapping={"data": "blob"})), shards, committed)
    assert {url: recipe["task"] for url, recipe in made.items()} == dict(zip(urls, shards, strict=True))
    assert made[urls[2]]["payload"]["shard"] == 2
