"""DAG runs and scheduled runs in the simulator: the sequential-evaluation invariant and exactly-once slots.

The sweeps run the named scenarios `dags` (200 seeds) and `cron-failover` (50 seeds, 30 virtual minutes
each) in two processes; the other tests show that the checks notice a wrong committed state, a coordinator
that applies the join rule wrongly, and a slot lost with its coordinator's submission.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from swarm.errors import ConfigError
from swarm.messages import TaskSpec, TaskUpdate
from swarm.sim.dags import (
    Cond,
    GenDag,
    GenStep,
    check_dag_run,
    evaluate,
    generate_dag,
    step_outcome,
)
from swarm.sim.faults import Partition, ScheduledFault
from swarm.sim.invariants import InvariantViolation
from swarm.sim.runner import SimReport, run_scenario
from swarm.sim.scenario import load_scenario
from swarm.sim.schedules import CronDriver, window_slots
from swarm.workflow.definition_parser import parse_definition
from swarm.workflow.gate import Verdict, decide
from tests.sim.sweeps import check_sweep

DAG_SEEDS = 200
CRON_SEEDS = 50


def _run(job: tuple[str, int]) -> SimReport:
    name, seed = job
    return run_scenario(load_scenario(name), seed)


@pytest.fixture(scope="module")
def sweeps() -> Iterator[dict[str, list[SimReport]]]:
    jobs = [("cron-failover", s) for s in range(CRON_SEEDS)] + [("dags", s) for s in range(DAG_SEEDS)]
    with ProcessPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(_run, jobs, chunksize=5))
    yield {
        "cron-failover": [r for r in reports if r.scenario == "cron-failover"],
        "dags": [r for r in reports if r.scenario == "dags"],
    }


def test_every_dag_run_matches_its_sequential_evaluation(sweeps: dict[str, list[SimReport]]) -> None:
    reports = sweeps["dags"]
    assert len(reports) == DAG_SEEDS
    check_sweep(reports)
    for report in reports:
        assert report.dags["runs"] == 9, report
        assert len(report.coordinators) >= 3, "both coordinator crashes took effect"
    totals = {key: sum(r.dags[key] for r in reports) for key in ("run", "skipped", "failed_upstream")}
    # Every verdict of the join rule occurs often, so the check is not vacuous.
    assert min(totals.values()) > 500, totals


def test_every_cron_slot_fires_exactly_once_across_coordinator_crashes(
    sweeps: dict[str, list[SimReport]],
) -> None:
    reports = sweeps["cron-failover"]
    assert len(reports) == CRON_SEEDS
    for report in reports:
        assert report.dags["slots"] == 30 and report.dags["runs"] == 30, report.dags
        assert report.completed + report.failed == report.tasks
        assert len(report.coordinators) >= 6, report.coordinators
    # Lost submissions were fired again by a successor under the same run id, and ran once.
    assert sum(r.dags["refired"] for r in reports) >= CRON_SEEDS


def test_window_is_thirty_minute_slots() -> None:
    slots = window_slots("*/1 * * * *", "UTC", 2.0, 1830.0)
    assert len(slots) == 30 and slots[1] - slots[0] == 60.0


# --- the evaluator, on hand-made and generated runs ---------------------------------------------------


def _upd(
    task_id: str, state: str, attempt: int = 1, v: int | None = None, error: str | None = None
) -> TaskUpdate:
    return TaskUpdate(task_id, state, attempt, "n", None if v is None else {"v": v}, error)  # type: ignore[arg-type]


def test_evaluator_follows_the_documented_table() -> None:
    steps = (
        GenStep("a", 1, ()),
        GenStep("b", 1, ()),
        GenStep("c", 2, ()),
        GenStep("on_fail", 1, (("a", Cond("FAILURE"), None),)),
        GenStep("need_ok", 1, (("a", Cond("SUCCESS"), None),)),
        GenStep("both", 1, (("b", Cond("SUCCESS"), None), ("a", Cond("SKIPPED"), None))),
        GenStep("expr", 1, (("b", Cond("SUCCESS", ">", 5), None),)),
        GenStep("always_expr", 1, (("a", Cond("ALWAYS", "==", 1), None),)),
        GenStep("fan", 1, (("c", Cond("SUCCESS", "in", 7), None),)),
        GenStep("after_skip", 1, (("expr", Cond("SUCCESS"), None),)),
    )
    gen = GenDag("t", steps, 0, 0.0)
    committed = {
        "r.a": _upd("r.a", "failed", error="error: boom"),
        "r.b": _upd("r.b", "done", v=3),
        "r.c.0": _upd("r.c.0", "done", v=7),
        "r.c.1": _upd("r.c.1", "done", v=2),
        "r.expr": _upd("r.expr", "skipped", 0, error="x"),
    }
    verdicts = evaluate(gen, "r", committed)
    expected: dict[str, Verdict] = {
        "on_fail": "run",
        "need_ok": "failed",  # SUCCESS from a failed parent: the failure travels on
        "both": "failed",  # SKIPPED from a failed parent fails too
        "expr": "skipped",  # a false expression on a done parent skips
        "always_expr": "failed",  # the expression reads nothing on a failed parent: false, and it failed
        "fan": "run",  # 7 is among the shards' values
        "after_skip": "skipped",
    }
    assert {k: verdicts[k] for k in expected} == expected


def _sequential_run(gen: GenDag, run_id: str, salt: int) -> tuple[dict[str, TaskUpdate], dict[Any, Any]]:
    """Committed states and attempt payloads as a correct engine (with no lost attempts) makes them."""
    committed: dict[str, TaskUpdate] = {}
    started: dict[tuple[str, int], dict[str, Any]] = {}
    by_id = {s.step_id: s for s in gen.steps}
    for step in gen.steps:
        verdict = evaluate(gen, run_id, committed).get(step.step_id)
        inputs: dict[str, Any] = {}
        for parent, _, mapped in step.parents:
            if mapped is not None and verdict == "run":
                values = [committed[t].result["v"] for t in gen.task_ids(run_id, by_id[parent])]
                inputs[mapped] = values[0] if len(values) == 1 else values
        for task_id in gen.task_ids(run_id, step):
            if verdict != "run":
                committed[task_id] = _upd(task_id, str(verdict), 0, error="upstream")
                continue
            for attempt in range(1, gen.max_retries + 2):
                started[(task_id, attempt)] = dict(inputs)
                out = step_outcome(salt, task_id, attempt, gen.fail_p)
                if not out.failed:
                    committed[task_id] = _upd(task_id, "done", attempt, v=out.value)
                    break
            else:
                committed[task_id] = _upd(task_id, "failed", attempt, error="error: simulated failure")
    return committed, started


def test_the_invariant_notices_a_wrong_committed_state() -> None:
    rng = random.Random(7)
    mutated = 0
    for i in range(40):
        doc, gen = generate_dag(rng, f"d{i}", 12, 3, 2, (0.1, 0.2), 0.2)
        parse_definition(doc)  # the generated definition is valid seed 004
        committed, started = _sequential_run(gen, "r", salt=i)
        assert check_dag_run(gen, "r", committed, started, salt=i) == []
        for task_id, update in committed.items():
            wrong = {"done": "skipped", "skipped": "done", "failed": "skipped"}[update.state]
            broken = {**committed, task_id: dataclasses.replace(update, state=wrong)}  # type: ignore[arg-type]
            assert check_dag_run(gen, "r", broken, started, salt=i), (task_id, update.state, wrong)
            mutated += 1
            if update.state == "done":
                value = {"v": (update.result["v"] + 1) % 10}
                broken = {**committed, task_id: dataclasses.replace(update, result=value)}
                assert any("result" in p for p in check_dag_run(gen, "r", broken, started, salt=i))
            elif update.attempt == 0:
                ran = {**started, (task_id, 1): {}}
                assert any("should not have run" in p for p in check_dag_run(gen, "r", committed, ran, i))
        del committed[next(iter(committed))]
        assert any("never committed" in p for p in check_dag_run(gen, "r", committed, started, salt=i))
    assert mutated > 200


def test_a_coordinator_that_skips_instead_of_failing_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong(spec: TaskSpec, committed: Any) -> tuple[Verdict, str]:
        verdict, why = decide(spec, committed)
        return ("skipped" if verdict == "failed" else verdict), why

    # The coordinator's own import is replaced; the simulator's evaluator never calls `decide`.
    monkeypatch.setattr("swarm.core.scheduler.decide", wrong)
    with pytest.raises(InvariantViolation, match=r"sequential evaluation: failed\): committed skipped"):
        for seed in range(10):
            run_scenario(load_scenario("dags"), seed)


# --- a submission lost while its coordinator keeps acting --------------------------------------------


def _with_lost_submission() -> Any:
    """cron-failover plus an outbound-only partition of the coordinator across the 15-minute slot: it
    keeps acting (it still hears everyone), but its RunStarted and spec never reach the broker."""
    sc = load_scenario("cron-failover")
    fault = ScheduledFault(959.8, Partition(mode="out"), "coordinator", 15.0)
    return dataclasses.replace(sc, faults=(*sc.faults, fault))


def test_counting_a_firing_when_sent_loses_a_slot_whose_submission_was_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The naive rule (a slot counts as fired when its records are sent) misses a slot whose submission
    the broker never took while the same coordinator stays in office: what the real rule prevents."""
    make = CronDriver.create

    def naive(*args: Any, **kwargs: Any) -> CronDriver:
        driver = make(*args, **kwargs)
        driver.trust_own_firing = True
        return driver

    monkeypatch.setattr(CronDriver, "create", naive)
    with pytest.raises(InvariantViolation, match=r"slot w0-cron0@20260101T0016Z never fired"):
        run_scenario(_with_lost_submission(), 1)


def test_counting_only_echoed_firings_recovers_the_lost_slot() -> None:
    for seed in range(3):
        report = run_scenario(_with_lost_submission(), seed)
        assert report.dags["slots"] == 30 and report.dags["refired"] >= 1


# --- scenario files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('kind = "dag"\njobs = 2', "workload[0].steps is required (kind = 'dag')"),
        ('kind = "dag"\nsteps = 4\nmaps = 3', "maps does not apply to kind = 'dag'"),
        ('kind = "dag"\nsteps = 4\ncron = "*/1 * *"', "workload[0].cron"),
        ('kind = "dag"\nsteps = 4\ncatchup = "SOME"', "catchup must be one of NONE, LATEST, ALL"),
        ('kind = "dag"\nsteps = 4\nfail_p = 2', "fail_p must be in [0, 1]"),
        ("tasks = 4\nsteps = 3", "steps does not apply to kind = 'batch'"),
    ],
)
def test_bad_dag_workloads_name_the_key(tmp_path: Any, table: str, error: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[[devices]]\nprofile = "server"\ncount = 1\n\n[[workload]]\nat = 1.0\n{table}\n')
    with pytest.raises(ConfigError, match=error.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_scenario(path)


def test_the_same_seed_replays_the_same_dag_run() -> None:
    a, b = (run_scenario(load_scenario("dags"), 3) for _ in range(2))
    assert a.trace_hash == b.trace_hash and a.dags == b.dags
