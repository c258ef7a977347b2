"""DAG workloads in the simulator: random definitions, their steps' outcomes, and the DAG invariant.

`generate_dag` draws a layered DAG from a seeded `random.Random` and returns both the seed-shaped
definition (parsed by the real `parse_definition`, compiled by the real `compile_run`) and `GenDag`, this
module's own description of it: which step hangs on which parent under which condition. The invariant
(`check_dag_run`) re-evaluates a finished run from `GenDag` alone, step by step in topological order,
with its own reading of the documented join rule and of the few expressions generated here; it never
calls `swarm.workflow.gate` or `swarm.workflow.conditions`, so it checks the coordinator rather than
restating it.

Every step is the task type `DAG_STEP`, which the world runs through `SimDags.start`: its outcome is a
pure function of (run seed, task id, attempt) (`step_outcome`), so the checker knows what each attempt
must have produced. Some steps fail on every attempt ("doomed"), others fail some attempts and recover
on a retry, and a done attempt returns `{"v": <0..9>}` for downstream expressions to read.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swarm.messages import Assignment, SubmitJob, TaskUpdate
from swarm.workflow.compile import ArtifactRef, RunRequest, compile_run
from swarm.workflow.definition_parser import parse_definition
from swarm.workflow.fields import DefinitionError
from swarm.workflow.model import DagDefinition

__all__ = [
    "DAG_STEP",
    "Cond",
    "GenDag",
    "GenStep",
    "Outcome",
    "SimDags",
    "check_dag_run",
    "compile_sim_run",
    "evaluate",
    "generate_dag",
    "step_outcome",
    "submit_random_runs",
]

#: The task type every simulated DAG step runs as (the SWARM runtime's entrypoint).
DAG_STEP = "simstep"
#: Share of the attempts of a step that is not doomed which fail anyway (and are retried).
FLAKY_P = 0.2
_WORDS = ("SUCCESS", "FAILURE", "ALWAYS", "SKIPPED")
_OPS = ("<", "<=", ">", ">=", "==", "!=")


@dataclass(frozen=True, slots=True)
class Cond:
    """An edge condition as generated: a state word, and optionally `output.v <op> k` (or `k in
    output.v` for a fanned-out parent) that must hold as well."""

    word: str
    op: str | None = None
    k: int = 0

    @property
    def text(self) -> str:
        """The condition as the definition writes it."""
        if self.op is None:
            return self.word
        expr = f"{self.k} in output.v" if self.op == "in" else f"output.v {self.op} {self.k}"
        return expr if self.word == "SUCCESS" else f"{self.word} AND {expr}"


@dataclass(frozen=True, slots=True)
class GenStep:
    """One step: its id, fan-out, and its parents with each edge's condition and mapped input."""

    step_id: str
    parallelism: int
    parents: tuple[tuple[str, Cond, str | None], ...]


@dataclass(frozen=True, slots=True)
class GenDag:
    """A generated DAG as this module understands it, steps in topological order."""

    dag_id: str
    steps: tuple[GenStep, ...]
    max_retries: int
    fail_p: float

    def task_ids(self, run_id: str, step: GenStep) -> tuple[str, ...]:
        """The task ids of a step in a run (one per shard of a fanned-out step)."""
        base = f"{run_id}.{step.step_id}"
        return (base,) if step.parallelism <= 1 else tuple(f"{base}.{i}" for i in range(step.parallelism))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt of a step does: fail, or finish with `{"v": value}`."""

    failed: bool
    value: int


def _unit(*parts: object) -> float:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def step_outcome(salt: int, task_id: str, attempt: int, fail_p: float) -> Outcome:
    """The outcome of attempt `attempt` of `task_id`: a pure function, so the checker can recompute it.

    A task is doomed (every attempt fails) with probability `fail_p`; otherwise each attempt fails with
    probability `FLAKY_P`. The value is drawn per attempt, so a retried step may read differently.
    """
    doomed = _unit(salt, task_id, "doomed") < fail_p
    failed = doomed or _unit(salt, task_id, attempt, "flaky") < FLAKY_P
    return Outcome(failed, int(_unit(salt, task_id, attempt, "v") * 10))


def generate_dag(
    rng: random.Random,
    dag_id: str,
    max_steps: int,
    fan_out: int,
    max_retries: int,
    cost: tuple[float, float],
    fail_p: float,
) -> tuple[dict[str, Any], GenDag]:
    """A random layered DAG: its seed-shaped definition and this module's description of it.

    Two to five layers, each step of a later layer hangs on one to three steps of earlier layers (mostly
    the layer before), each edge under a random condition: a state word, or an expression over the
    parent's `v` (with SUCCESS or ALWAYS); SUCCESS edges sometimes map `v` into an input.
    """
    total = rng.randint(2, max(2, max_steps))
    layers: list[list[str]] = [[]]
    for i in range(total):
        if layers[-1] and (len(layers) < 2 or rng.random() < 0.4):
            layers.append([])
        layers[-1].append(f"s{i}")
    steps: list[GenStep] = []
    earlier: list[str] = []
    fanned: dict[str, int] = {}
    for depth, layer in enumerate(layers):
        for step_id in layer:
            parallelism = rng.randint(2, fan_out) if fan_out > 1 and rng.random() < 0.2 else 1
            fanned[step_id] = parallelism
            parents: list[tuple[str, Cond, str | None]] = []
            if depth > 0:
                previous = layers[depth - 1]
                count = min(rng.randint(1, 3), len(earlier))
                chosen = {rng.choice(previous)}
                while len(chosen) < count:
                    chosen.add(rng.choice(earlier))
                for parent in sorted(chosen, key=earlier.index):
                    cond = _random_cond(rng, fanned[parent] > 1)
                    mapped = f"in_{parent}" if cond.word == "SUCCESS" and rng.random() < 0.5 else None
                    parents.append((parent, cond, mapped))
            steps.append(GenStep(step_id, parallelism, tuple(parents)))
        earlier.extend(layer)
    gen = GenDag(dag_id, tuple(steps), max_retries, fail_p)
    return _definition(rng, gen, cost), gen


def _random_cond(rng: random.Random, fanned: bool) -> Cond:
    roll = rng.random()
    if roll < 0.3:
        word = "SUCCESS"
    elif roll < 0.45:
        word = "FAILURE"
    elif roll < 0.6:
        word = "ALWAYS"
    elif roll < 0.7:
        word = "SKIPPED"
    else:
        word = rng.choice(("SUCCESS", "SUCCESS", "ALWAYS"))
        if fanned:
            return Cond(word, "in", rng.randint(0, 9))
        return Cond(word, rng.choice(_OPS), rng.randint(0, 9))
    return Cond(word)


def _definition(rng: random.Random, gen: GenDag, cost: tuple[float, float]) -> dict[str, Any]:
    nodes = []
    edges = []
    for step in gen.steps:
        node: dict[str, Any] = {
            "nodeId": step.step_id,
            "taskDefinition": {
                "runtime": "SWARM",
                "entrypoint": DAG_STEP,
                "params": {"cost": round(rng.uniform(*cost), 4), "fail_p": gen.fail_p},
            },
        }
        if step.parallelism > 1:
            node["executionConfig"] = {"parallelism": step.parallelism}
        nodes.append(node)
        for parent, cond, mapped in step.parents:
            edge: dict[str, Any] = {"from": parent, "to": step.step_id, "condition": cond.text}
            if mapped is not None:
                edge["dataMapping"] = {mapped: "v"}
            edges.append(edge)
    return {
        "dagId": gen.dag_id,
        "version": "1.0.0",
        "nodes": nodes,
        "edges": edges,
        "schedule": {
            "type": "MANUAL",
            "retryPolicy": {"maxRetries": gen.max_retries, "retryInterval": "PT0.5S", "backoffMultiplier": 2},
        },
    }


def _no_artifacts(ref: str) -> ArtifactRef:
    raise DefinitionError("taskDefinition.artifactId", f"simulated steps use no artifact ({ref!r})")


def compile_sim_run(definition: DagDefinition, run_id: str, submitted_by: str, trigger: str) -> SubmitJob:
    """The job of one run, built by the real compiler."""
    return compile_run(definition, RunRequest(run_id, {}, submitted_by, trigger=trigger), _no_artifacts)


@dataclass(slots=True)
class SimDags:
    """The world's side of DAG steps: their outcomes, what each attempt started with, and the runs."""

    salt: int
    runs: dict[str, GenDag] = field(default_factory=dict)
    #: (task id, attempt) -> the payload the attempt started with, in start order.
    started: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)

    def add_run(self, run_id: str, gen: GenDag) -> None:
        """Remember a run to check at the end."""
        self.runs[run_id] = gen

    def check(self, committed: Mapping[str, Mapping[str, TaskUpdate]]) -> tuple[list[str], dict[str, int]]:
        """The DAG invariant over every run (`committed`: job id -> task id -> committed update, the
        submitter's view): its problems, and how many steps ran, were skipped or failed by upstream."""
        problems: list[str] = []
        stats = {"runs": len(self.runs), "run": 0, "skipped": 0, "failed_upstream": 0}
        for run_id, gen in sorted(self.runs.items()):
            updates = committed.get(run_id, {})
            problems += check_dag_run(gen, run_id, updates, self.started, self.salt)
            for verdict in evaluate(gen, run_id, updates).values():
                stats["failed_upstream" if verdict == "failed" else verdict] += 1
        return problems, stats

    def start(self, a: Assignment) -> tuple[float, bool, Any]:
        """An attempt starts: its cost on a speed-1 device, whether it fails, and its result."""
        self.started[(a.task_id, a.attempt)] = dict(a.payload)
        out = step_outcome(self.salt, a.task_id, a.attempt, float(a.payload.get("fail_p", 0.0)))
        return float(a.payload.get("cost", 0.05)), out.failed, {"v": out.value}


# --- the invariant ---------------------------------------------------------------------------------


def _combined(states: list[str]) -> str:
    """A fanned-out parent's state, as docs/workflows.md words it."""
    if all(s == "done" for s in states):
        return "done"
    for worst in ("failed", "cancelled"):
        if worst in states:
            return worst
    return "skipped" if all(s == "skipped" for s in states) else "done"


def _holds(cond: Cond, state: str, values: list[int | None]) -> bool:
    word = {
        "SUCCESS": state == "done",
        "FAILURE": state in ("failed", "cancelled"),
        "ALWAYS": True,
        "SKIPPED": state == "skipped",
    }[cond.word]
    if not word or cond.op is None:
        return word
    # An expression reads outputs only a done parent has; anything else reads as unknown, i.e. false.
    if state != "done" or any(v is None for v in values):
        return False
    if cond.op == "in":
        return cond.k in values
    v = values[0]
    assert v is not None
    return {
        "<": v < cond.k,
        "<=": v <= cond.k,
        ">": v > cond.k,
        ">=": v >= cond.k,
        "==": v == cond.k,
        "!=": v != cond.k,
    }[cond.op]


def _value(update: TaskUpdate) -> int | None:
    result = update.result
    if update.state != "done" or not isinstance(result, dict) or not isinstance(result.get("v"), int):
        return None
    return int(result["v"])


def evaluate(gen: GenDag, run_id: str, committed: Mapping[str, TaskUpdate]) -> dict[str, str]:
    """The sequential evaluation: per step, "run", "skipped" or "failed" (by upstream), from its parents'
    committed final states and outputs. A step with a parent not committed is left out."""
    verdicts: dict[str, str] = {}
    by_id = {s.step_id: s for s in gen.steps}
    for step in gen.steps:
        verdict = "run"
        for parent, cond, _ in step.parents:
            updates = [committed.get(t) for t in gen.task_ids(run_id, by_id[parent])]
            if any(u is None for u in updates):
                verdict = "unknown"
                break
            done = [u for u in updates if u is not None]
            state = _combined([u.state for u in done])
            if _holds(cond, state, [_value(u) for u in done]):
                continue
            if state in ("failed", "cancelled"):
                verdict = "failed"
            elif verdict == "run":
                verdict = "skipped"
        if verdict != "unknown":
            verdicts[step.step_id] = verdict
    return verdicts


def check_dag_run(
    gen: GenDag,
    run_id: str,
    committed: Mapping[str, TaskUpdate],
    started: Mapping[tuple[str, int], Mapping[str, Any]],
    salt: int,
) -> list[str]:
    """Problems with a finished run: every task committed; a step the evaluation runs ended done with
    its last attempt's deterministic output, or failed by its own attempts; a skipped or upstream-failed
    step has exactly that state and never started; a started step got its mapped inputs."""
    problems: list[str] = []
    verdicts = evaluate(gen, run_id, committed)
    by_id = {s.step_id: s for s in gen.steps}
    attempts: dict[str, list[Mapping[str, Any]]] = {}
    for (task_id, _), payload in started.items():
        attempts.setdefault(task_id, []).append(payload)
    for step in gen.steps:
        for task_id in gen.task_ids(run_id, step):
            update = committed.get(task_id)
            if update is None:
                problems.append(f"{task_id}: never committed")
                continue
            verdict = verdicts.get(step.step_id)
            where = f"{task_id} (sequential evaluation: {verdict})"
            if verdict in ("skipped", "failed"):
                if update.state != verdict:
                    problems.append(f"{where}: committed {update.state} ({update.error})")
                if task_id in attempts:
                    problems.append(f"{where}: started although it should not have run")
                continue
            if verdict is None:
                problems.append(f"{where}: a parent was never committed")
                continue
            problems += _check_ran(where, update, salt, gen.fail_p, gen.max_retries)
            problems += _check_inputs(gen, by_id, run_id, step, task_id, committed, attempts.get(task_id, []))
    return problems


def _check_ran(where: str, update: TaskUpdate, salt: int, fail_p: float, max_retries: int) -> list[str]:
    out = step_outcome(salt, update.task_id, update.attempt, fail_p)
    if update.state == "done":
        if out.failed:
            return [f"{where}: committed done, but attempt {update.attempt} fails"]
        if update.result != {"v": out.value}:
            return [f"{where}: result {update.result}, attempt {update.attempt} gives {{'v': {out.value}}}"]
        return []
    if update.state != "failed":
        return [f"{where}: committed {update.state} ({update.error})"]
    error = update.error or ""
    if error.startswith("error:"):
        if not out.failed:
            return [f"{where}: committed failed ({error}), but attempt {update.attempt} succeeds"]
        if update.attempt != max_retries + 1:
            return [f"{where}: failed after {update.attempt} of {max_retries + 1} attempts"]
        return []
    # Attempts lost with their nodes (or timed out) use retries up too: a failure of its own all the same.
    if error.startswith(("lost:", "timeout:")):
        return []
    return [f"{where}: committed failed for a reason not its own: {error}"]


def _check_inputs(
    gen: GenDag,
    by_id: Mapping[str, GenStep],
    run_id: str,
    step: GenStep,
    task_id: str,
    committed: Mapping[str, TaskUpdate],
    attempts: list[Mapping[str, Any]],
) -> list[str]:
    problems = []
    for parent, _, mapped in step.parents:
        if mapped is None:
            continue
        values = [_value(committed[t]) for t in gen.task_ids(run_id, by_id[parent])]
        want: Any = values[0] if len(values) == 1 else values
        for payload in attempts:
            if payload.get(mapped) != want:
                problems.append(
                    f"{task_id}: input {mapped} = {payload.get(mapped)!r}, {parent} gave {want!r}"
                )
    return problems


def submit_random_runs(
    rng: random.Random,
    dags: SimDags,
    prefix: str,
    runs: int,
    max_steps: int,
    fan_out: int,
    max_retries: int,
    cost: tuple[float, float],
    fail_p: float,
    submitted_by: str,
) -> list[SubmitJob]:
    """`runs` runs, each of a freshly generated DAG, compiled and remembered for the check."""
    jobs = []
    for j in range(runs):
        doc, gen = generate_dag(rng, f"{prefix}-dag{j}", max_steps, fan_out, max_retries, cost, fail_p)
        run_id = f"{gen.dag_id}@run"
        jobs.append(compile_sim_run(parse_definition(doc), run_id, submitted_by, "manual"))
        dags.add_run(run_id, gen)
    return jobs
