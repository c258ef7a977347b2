"""Workflow steps in the scheduler: the join rule, data passing between steps, fan-out and adoption."""

from __future__ import annotations

from typing import Any

import pytest

from swarm.core.events import Publish
from swarm.core.scheduler import Scheduler
from swarm.errors import InvalidSpec
from swarm.messages import (
    Amend,
    Assign,
    Inflow,
    Started,
    SubmitJob,
    TaskResult,
    TaskSpec,
    TasksStarted,
    TaskUpdate,
)
from swarm.workflow.gate import combined_state, decide
from tests.unit.test_scheduler import assigned, commits, member, place, sched


def step(task_id: str, *flows: Inflow, params: dict[str, Any] | None = None) -> TaskSpec:
    after = tuple(s for f in flows for s in f.sources)
    return TaskSpec(task_id, "step.python", {"params": params or {}}, after=after, inflows=flows)


def edge(*sources: str, condition: str = "SUCCESS", **mapping: str) -> Inflow:
    return Inflow(tuple(sources), condition, dict(mapping))


def result(task_id: str, kind: str = "ok", attempt: int = 1, **outputs: Any) -> TaskResult:
    return TaskResult(task_id, "r", attempt, kind, {"outputs": outputs}, None if kind == "ok" else "boom")  # type: ignore[arg-type]


class Run:
    """Every commit of a run, and the payload each task was assigned with."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.payloads: dict[str, dict[str, Any]] = {}


def run_to_end(s: Scheduler, outcomes: dict[str, TaskResult], now: float = 0.0) -> Run:
    """Feed each assigned task its outcome until nothing more is assigned."""
    run = Run()
    for _ in range(20):
        place(s, [member("w1", slots=8)], now)
        effects = s.drain(now)
        run.states.update(commits(effects))
        for e in effects:
            if isinstance(e, Publish) and isinstance(e.body, Assign):
                run.payloads.update((a.task_id, a.payload) for a in e.body.tasks)
        batch = assigned(effects).get("w1", [])
        if not batch:
            break
        now += 1.0
        s.on_results("w1", [outcomes[t] for t, _ in batch], now)
    return run


def test_inputs_flow_from_mapped_outputs_and_params() -> None:
    s = sched()
    tasks = (step("r.a"), step("r.b", edge("r.a", total="rows"), params={"k": 1}))
    job = SubmitJob("r", tasks, kind="dag", role="operator")
    s.on_submit(job, 0.0)
    run = run_to_end(s, {"r.a": result("r.a", rows=7), "r.b": result("r.b")})
    assert run.states == {"r.a": "done", "r.b": "done"}
    assert run.payloads["r.b"]["inputs"] == {"k": 1, "total": 7}


def test_failure_travels_on_and_handlers_run() -> None:
    s = sched()
    a = step("r.a")
    tasks = (
        a,
        step("r.ok", edge("r.a")),
        step("r.on_fail", edge("r.a", condition="FAILURE")),
        step("r.always", edge("r.a", condition="ALWAYS")),
        step("r.after_ok", edge("r.ok")),
    )
    s.on_submit(SubmitJob("r", tasks, kind="dag", role="operator"), 0.0)
    outcomes = {t.task_id: result(t.task_id) for t in tasks}
    outcomes["r.a"] = result("r.a", "fatal")
    run = run_to_end(s, outcomes)
    assert run.states == {
        "r.a": "failed",
        "r.ok": "failed",
        "r.on_fail": "done",
        "r.always": "done",
        "r.after_ok": "failed",
    }


def test_false_conditions_skip_and_skips_travel_on() -> None:
    s = sched()
    tasks = (
        step("r.a"),
        step("r.big", edge("r.a", condition="SUCCESS AND output.rows > 100")),
        step("r.small", edge("r.a", condition="output.rows <= 100")),
        step("r.after_big", edge("r.big")),
        step("r.finally", edge("r.big", condition="ALWAYS")),
        step("r.on_skip", edge("r.big", condition="SKIPPED")),
    )
    s.on_submit(SubmitJob("r", tasks, kind="dag", role="operator"), 0.0)
    outcomes = {t.task_id: result(t.task_id) for t in tasks}
    outcomes["r.a"] = result("r.a", rows=5)
    run = run_to_end(s, outcomes)
    assert run.states == {
        "r.a": "done",
        "r.big": "skipped",
        "r.small": "done",
        "r.after_big": "skipped",
        "r.finally": "done",
        "r.on_skip": "done",
    }


def test_join_of_several_parents_needs_every_edge() -> None:
    s = sched()
    tasks = (step("r.a"), step("r.b"), step("r.join", edge("r.a", x="v"), edge("r.b", condition="FAILURE")))
    s.on_submit(SubmitJob("r", tasks, kind="dag", role="operator"), 0.0)
    run = run_to_end(s, {"r.a": result("r.a", v=1), "r.b": result("r.b"), "r.join": result("r.join")})
    assert run.states["r.join"] == "skipped"  # b succeeded, so its FAILURE edge does not hold


def test_fanned_out_step_passes_the_list_of_its_shards_values() -> None:
    s = sched()
    shards = ("r.m.0", "r.m.1", "r.m.2")
    tasks = (*(step(t) for t in shards), step("r.reduce", edge(*shards, parts="n")))
    s.on_submit(SubmitJob("r", tasks, kind="dag", role="operator"), 0.0)
    outcomes = {t: result(t, n=i) for i, t in enumerate(shards)}
    outcomes["r.reduce"] = result("r.reduce")
    run = run_to_end(s, outcomes)
    assert run.states["r.reduce"] == "done"
    assert run.payloads["r.reduce"]["inputs"] == {"parts": [0, 1, 2]}


def test_a_successor_decides_the_same_way_from_committed_states() -> None:
    s = sched()
    tasks = (step("r.a"), step("r.b", edge("r.a", condition="FAILURE")), step("r.c", edge("r.a", x="v")))
    committed = {"r.a": TaskUpdate("r.a", "done", 1, "w1", {"outputs": {"v": 3}})}
    s.adopt(SubmitJob("r", tasks, kind="dag", role="operator"), committed, 0.0)
    run = run_to_end(s, {"r.c": result("r.c")})
    assert run.states == {"r.a": "done", "r.b": "skipped", "r.c": "done"}
    assert run.payloads["r.c"]["inputs"] == {"x": 3}


def test_combined_state_of_shards() -> None:
    assert combined_state(["done", "done"]) == "done"
    assert combined_state(["done", "failed", "cancelled"]) == "failed"
    assert combined_state(["done", "cancelled"]) == "cancelled"
    assert combined_state(["skipped", "skipped"]) == "skipped"


def test_decide_names_the_upstream() -> None:
    spec = step("r.b", edge("r.a"))
    verdict, why = decide(spec, {"r.a": TaskUpdate("r.a", "failed", 1)})
    assert verdict == "failed" and "r.a" in why


@pytest.mark.parametrize(
    "tasks, message",
    [
        ((step("r.a"), TaskSpec("r.b", "echo", {}, after=("r.a",), inflows=(edge("r.x"),))), "exactly"),
        ((step("r.a"), step("r.b", edge("r.a", condition="SUCCESS AND ("))), "condition"),
    ],
)
def test_bad_inflows_are_refused(tasks: tuple[TaskSpec, ...], message: str) -> None:
    from swarm.core.jobs import check_job

    with pytest.raises(InvalidSpec):
        check_job(SubmitJob("r", tasks))


def test_reserved_job_ids_are_refused() -> None:
    from swarm.core.jobs import check_job

    with pytest.raises(InvalidSpec, match="reserved"):
        check_job(SubmitJob("_artifacts", (TaskSpec("a", "echo", {}),)))


def test_a_workflow_runs_steps_are_announced_as_they_start() -> None:
    s = sched()
    s.on_submit(SubmitJob("r", (step("r.a"), step("r.b", edge("r.a"))), kind="dag", role="operator"), 0.0)
    s.on_submit(SubmitJob("plain", (TaskSpec("plain.t", "echo", {}),)), 0.0)
    place(s, [member("w1", slots=8)], 0.0)
    events = [e.body for e in s.drain(0.0) if isinstance(e, Publish) and isinstance(e.body, TasksStarted)]
    assert events == [TasksStarted("r", (Started("r.a", 1, "w1"),))]  # the plain job says nothing


def test_a_running_job_is_amended_skipping_unstarted_steps_and_adding_new_ones() -> None:
    s = sched()
    tasks = (step("r.a"), step("r.b", edge("r.a")), step("r.c", edge("r.a")))
    s.on_submit(SubmitJob("r", tasks, kind="dag", submitted_by="u1", role="operator"), 0.0)
    place(s, [member("w1", slots=8)], 0.0)
    s.drain(0.0)  # r.a runs now
    added = step("r.d", edge("r.a", x="v"))
    assert s.on_amend(Amend("r", ("r.a",), (), "u1", "submitter"), 0.1) is not None  # started already
    assert s.on_amend(Amend("r", ("r.c",), (), "u2", "submitter"), 0.1) is not None  # not the owner's
    assert s.on_amend(Amend("r", ("r.c",), (added,), "u1", "submitter"), 0.1) is None
    effects = s.drain(0.1)
    assert commits(effects) == {"r.c": "skipped"}
    (spec,) = [e.body for e in effects if isinstance(e, Publish) and isinstance(e.body, SubmitJob)]
    assert [t.task_id for t in spec.tasks] == ["r.a", "r.b", "r.c", "r.d"]  # durable for a successor
    s.on_results("w1", [result("r.a", v=5)], 1.0)
    run = run_to_end(s, {"r.b": result("r.b"), "r.d": result("r.d")}, now=1.0)
    assert run.states == {"r.a": "done", "r.b": "done", "r.d": "done"}
    assert run.payloads["r.d"]["inputs"] == {"x": 5}
    assert s.on_amend(Amend("r", (), (step("r.e"),), "u1", "submitter"), 9.0) is not None  # finished
