"""Seed 004's two accuracy figures, measured in the simulator against injected truth.

The experiment runs the real coordinator on the virtual clock (`SimWorld`), each *case* being one DAG
run `runs` times in a row on its own small cluster (one run at a time, so the DAG has the cluster to
itself, as `analyze_flow` assumes). Every step is a `simstep` task costing `cost` seconds per shard on a
speed-1 device; devices get speeds drawn from `SPEEDS` (so durations vary by up to +-20 % with the
device, below the 30 % band). The committed task updates (`started_at`, `finished_at`, `node`, state)
become `insights.Sample`s: a step's duration is its first shard's start to its last shard's end, its
device the device of its longest shard, `ok` when every shard ended done. Steps that never started
(skipped, or failed upstream) give no sample. Flaky attempts (`swarm.sim.dags.FLAKY_P`) are retried as
usual; a sample times the committed attempt.

Injected truth, by case kind:

- `control`: a layered DAG (3 to 5 layers of 1 to 3 steps, each hanging on 1 or 2 steps of the layer
  above), ordinary steps costing `ORDINARY_COST` seconds, a fifth of them fanned out to 2 shards.
  Nothing injected: the expected suggestions and alerts are none.
- `bottleneck`: the same, plus one step of a middle layer costing k times the largest ordinary cost
  (k drawn from 4..8) with parallelism 2, on a cluster with spare slots (`DEVICES` x `slots` >= 4).
  Expected: (that step, INCREASE_PARALLELISM).
- `slow-device`: the control shape, and from run `runs // 2` on one device runs `factor` times slower
  (`SimWorld.set_slow`, factor 2.5..4, i.e. speed 0.25..0.4 of its own). Expected alerts: the (run,
  step) pairs of that window with a shard on the slowed device whose injected delay, cost / speed *
  (factor - 1), exceeds the tolerance band max(variance * cost, min_slack_s) that the seed's
  `executionDurationVariance` and `insights.detect_anomalies` document (a delay inside the band is, by
  the seed's definition, not an anomaly). Expected suggestions: (step, SLOW_DEVICE) for every step that
  ran on the slowed device in the window and has at least two runs attributed to that device in all
  (one observation cannot tell a device from a run). The slowed device is the busiest or second
  busiest before the window: the scheduler does not spread a lone DAG evenly, and a device it never
  picks could not slow anything down.

Parallelism suggestions the injection did not plant are not wrong by fiat: each (step, INCREASE_
PARALLELISM or SPLIT_BY_KEY) outside the injected truth, from either rule, is *verified*: the case's DAG
runs again `VERIFY_RUNS` times with that step raised to the suggested shard count (work conserved: each
shard's cost scaled by p / p'), and the suggestion counts as correct (joins the truth) when the mean
measured makespan drops by at least `min_gain_ratio` (10 %, what `suggest` promises). The figures are
given both ways: `strict` (injected truth only) and `verified` (injected plus verified).

Scoring: suggestions are computed once per case from all its samples (`insights.suggest`, as the API
service calls it); alerts online, each run against the statistics of the runs before it
(`insights.detect_anomalies`), the baseline being either every earlier sample ("all") or the earlier
samples not alerted on ("clean": the insights module leaves that choice to its caller, and a baseline
that absorbs the anomalies stops seeing them after two or three). Suggestion accuracy is the F1 of
(case, step, action) pairs (`insights.suggestion_accuracy`); anomaly prediction is the precision and
recall of (run, step) alerts (`insights.anomaly_scores`), FAST alerts included as predictions. Naive
rules are scored on the same runs: "more shards (INCREASE_PARALLELISM, or SPLIT_BY_KEY for a single
shard) for the step with the longest mean duration" and "alert when a run is slower than the baseline
mean (after 3 runs)".

Not modelled: CPU and memory samples (simulated tasks report none), so RIGHTSIZE_CPU/MEMORY are not
measured; failures (INVESTIGATE_FAILURES) are not injected.
"""

from __future__ import annotations

import functools
import random
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from swarm.core.config import CoreConfig
from swarm.messages import TaskUpdate
from swarm.sim.dags import compile_sim_run
from swarm.sim.invariants import Checker
from swarm.sim.world import SimWorld
from swarm.workflow.analysis import StepEstimate
from swarm.workflow.definition_parser import parse_definition
from swarm.workflow.insights import (
    Alert,
    Sample,
    Score,
    Suggestion,
    anomaly_scores,
    detect_anomalies,
    duration_stats,
    suggest,
    suggestion_accuracy,
)

__all__ = [
    "KINDS",
    "Case",
    "CaseRun",
    "Figures",
    "PlanStep",
    "measure_case",
    "plan_case",
    "run_case",
    "run_experiment",
    "samples_of",
]

KINDS = ("control", "bottleneck", "slow-device")
PARALLEL_ACTIONS = ("INCREASE_PARALLELISM", "SPLIT_BY_KEY")
SUGGESTION_RULES = ("insights", "naive")
ALERT_RULES = ("clean", "all", "naive")
DEVICES = 5
SLOTS = 2
SPEEDS = (0.85, 1.2)
ORDINARY_COST = (0.5, 2.0)
SLOW_FACTOR = (2.5, 4.0)
VERIFY_RUNS = 3
VARIANCE = 0.3
MIN_SLACK_S = 2.0
#: Virtual seconds a single run may take before the experiment gives up on it.
RUN_LIMIT_S = 600.0


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One step of a planned DAG: seconds per shard on a speed-1 device, shards, parents."""

    step_id: str
    cost: float
    parallelism: int
    parents: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Case:
    """One DAG, its cluster and what is injected into it (see the module docstring)."""

    name: str
    kind: str
    steps: tuple[PlanStep, ...]
    speeds: tuple[float, ...]
    bottleneck: str | None = None
    slow_rank: int | None = None
    slow_factor: float = 1.0
    slow_from: int = 0

    def definition(self) -> dict[str, Any]:
        """The seed-shaped definition (SWARM runtime, entrypoint `simstep`)."""
        nodes: list[dict[str, Any]] = []
        edges: list[dict[str, Any]] = []
        for s in self.steps:
            node: dict[str, Any] = {
                "nodeId": s.step_id,
                "taskDefinition": {"runtime": "SWARM", "entrypoint": "echo", "params": {"cost": s.cost}},
            }
            if s.parallelism > 1:
                node["executionConfig"] = {"parallelism": s.parallelism}
            nodes.append(node)
            edges.extend({"from": p, "to": s.step_id} for p in s.parents)
        return {
            "dagId": self.name,
            "version": "1.0.0",
            "nodes": nodes,
            "edges": edges,
            "schedule": {
                "type": "MANUAL",
                "retryPolicy": {"maxRetries": 3, "retryInterval": "PT0.5S", "backoffMultiplier": 2},
            },
        }

    def with_parallelism(self, step_id: str, shards: int) -> Case:
        """The same case with one step split into `shards`, work conserved, and nothing slowed."""
        steps = tuple(
            replace(s, parallelism=shards, cost=s.cost * s.parallelism / shards)
            if s.step_id == step_id
            else s
            for s in self.steps
        )
        return replace(self, steps=steps, slow_rank=None, slow_factor=1.0)


def plan_case(rng: random.Random, name: str, kind: str) -> Case:
    """A random layered DAG with the kind's injection (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    layers: list[list[PlanStep]] = []
    for _ in range(rng.randint(3, 5)):
        layer: list[PlanStep] = []
        for _width in range(rng.randint(1, 3)):
            above = [s.step_id for s in layers[-1]] if layers else []
            parents = tuple(sorted(rng.sample(above, min(len(above), rng.randint(1, 2)))))
            shards = 2 if rng.random() < 0.2 else 1
            step_id = f"s{sum(len(x) for x in layers) + len(layer)}"
            layer.append(PlanStep(step_id, round(rng.uniform(*ORDINARY_COST), 3), shards, parents))
        layers.append(layer)
    speeds = tuple(round(rng.uniform(*SPEEDS), 3) for _ in range(DEVICES))
    bottleneck = None
    if kind == "bottleneck":
        middle = layers[rng.randint(1, len(layers) - 2)]
        i = rng.randrange(len(middle))
        cost = round(rng.randint(4, 8) * ORDINARY_COST[1], 3)
        middle[i] = replace(middle[i], cost=cost, parallelism=2)
        bottleneck = middle[i].step_id
    steps = tuple(s for layer in layers for s in layer)
    case = Case(name, kind, steps, speeds, bottleneck=bottleneck)
    if kind == "slow-device":
        case = replace(case, slow_rank=rng.randrange(2), slow_factor=round(rng.uniform(*SLOW_FACTOR), 2))
    return case


@dataclass(slots=True)
class CaseRun:
    """What running a case gave: its samples in run order, and the committed updates by run."""

    case: Case
    runs: int
    samples: list[Sample]
    updates: dict[str, dict[str, TaskUpdate]]
    slots: int
    slow_device: str | None = None

    def makespans(self) -> list[float]:
        """Per run: first start to last end of its steps."""
        by_run: dict[str, list[Sample]] = defaultdict(list)
        for s in self.samples:
            by_run[s.run_id].append(s)
        return [
            max(s.started_at + s.duration_s for s in xs) - min(s.started_at for s in xs)
            for xs in by_run.values()
        ]


def run_id(case: Case, index: int) -> str:
    """The id of a case's run `index`."""
    return f"{case.name}@r{index:02d}"


def run_case(case: Case, seed: int, runs: int) -> CaseRun:
    """Run the case's DAG `runs` times in a row on a fresh simulated cluster; slow from `slow_from`."""
    config = CoreConfig(heartbeat_interval=1.0, failure_timeout=4.0, election_timeout=6.0, tick_interval=0.25)
    world = SimWorld(seed, replace(config, slots=SLOTS))
    checker = Checker(world, f"insights experiment, case {case.name}, seed {seed}")
    for i, speed in enumerate(case.speeds):
        world.add_node(f"dev{i}", speed=speed)
    world.run_until(8.0)  # an election first
    definition = parse_definition(case.definition())
    slow_device = None
    for r in range(runs):
        if case.slow_rank is not None and r == case.slow_from:
            slow_device = _by_use(checker, case.slow_rank)
            world.set_slow(slow_device, case.slow_factor)
        rid = run_id(case, r)
        checker.submit(compile_sim_run(definition, rid, checker.client_id, "manual"))
        progress = checker.tracker.jobs[rid]
        world.run_until(world.now + RUN_LIMIT_S, stop=lambda p=progress: p.finished)  # type: ignore[misc]
        if not progress.finished:
            raise RuntimeError(f"{rid}: not finished after {RUN_LIMIT_S:g} virtual seconds")
    updates = {rid: dict(job.updates) for rid, job in checker.tracker.jobs.items()}
    samples = [s for r in range(runs) for s in samples_of(case, run_id(case, r), updates[run_id(case, r)])]
    return CaseRun(case, runs, samples, updates, DEVICES * SLOTS, slow_device)


def _by_use(checker: Checker, rank: int) -> str:
    """The device that ran the `rank`-th most attempts so far (0: the busiest), ties by name: a device
    the scheduler never picks could not make anything slow."""
    use: dict[str, int] = {f"dev{i}": 0 for i in range(DEVICES)}
    for job in checker.tracker.jobs.values():
        for u in job.updates.values():
            if u.node in use:
                use[u.node] += 1
    return sorted(use, key=lambda d: (-use[d], d))[rank]


def _task_ids(rid: str, step: PlanStep) -> list[str]:
    base = f"{rid}.{step.step_id}"
    return [base] if step.parallelism <= 1 else [f"{base}.{i}" for i in range(step.parallelism)]


def samples_of(case: Case, rid: str, updates: dict[str, TaskUpdate]) -> list[Sample]:
    """One `Sample` per step of a run that started (see the module docstring for the figures)."""
    out = []
    for step in case.steps:
        shards = [updates.get(t) for t in _task_ids(rid, step)]
        ran = [u for u in shards if u is not None and u.started_at > 0 and u.finished_at >= u.started_at]
        if not ran:
            continue
        longest = max(ran, key=lambda u: u.finished_at - u.started_at)
        start = min(u.started_at for u in ran)
        out.append(
            Sample(
                run_id=rid,
                node_id=step.step_id,
                started_at=start,
                duration_s=max(u.finished_at for u in ran) - start,
                ok=all(u is not None and u.state == "done" for u in shards),
                parallelism=step.parallelism,
                device=longest.node or "",
            )
        )
    return out


# --- truth and predictions --------------------------------------------------------------------------


def _slowed(cr: CaseRun, rid: str, step: PlanStep) -> bool:
    """Whether a shard of the step ran on the slowed device during the window."""
    if cr.slow_device is None or int(rid.rpartition("@r")[2]) < cr.case.slow_from:
        return False
    ups = cr.updates.get(rid, {})
    return any((u := ups.get(t)) is not None and u.node == cr.slow_device for t in _task_ids(rid, step))


def injected_alerts(cr: CaseRun) -> set[tuple[str, str]]:
    """(run, step) pairs slowed beyond the tolerance band (see the module docstring)."""
    case = cr.case
    if cr.slow_device is None:
        return set()
    speed = case.speeds[int(cr.slow_device.removeprefix("dev"))]
    truth = set()
    for r in range(case.slow_from, cr.runs):
        rid = run_id(case, r)
        for step in case.steps:
            delay = step.cost / speed * (case.slow_factor - 1)
            if _slowed(cr, rid, step) and delay > max(VARIANCE * step.cost, MIN_SLACK_S):
                truth.add((rid, step.step_id))
    return truth


def injected_suggestions(cr: CaseRun) -> set[tuple[str, str]]:
    """(step, action) pairs the injection plants."""
    case = cr.case
    truth = set()
    if case.bottleneck is not None:
        truth.add((case.bottleneck, "INCREASE_PARALLELISM"))
    if cr.slow_device is not None:
        for step in case.steps:
            on_device = [s for s in cr.samples if s.node_id == step.step_id and s.device == cr.slow_device]
            slowed = any(_slowed(cr, run_id(case, r), step) for r in range(case.slow_from, cr.runs))
            if slowed and len(on_device) >= 2:
                truth.add((step.step_id, "SLOW_DEVICE"))
    return truth


def insight_suggestions(cr: CaseRun) -> list[Suggestion]:
    """`insights.suggest` over all of a case's samples, fed as the API service feeds it."""
    stats = duration_stats(cr.samples)
    estimates = [
        StepEstimate(s.step_id, stats[s.step_id].mean if s.step_id in stats else s.cost, s.parallelism)
        for s in cr.case.steps
    ]
    edges = [(p, s.step_id) for s in cr.case.steps for p in s.parents]
    return suggest(estimates, edges, stats, cr.slots)


def naive_suggestions(cr: CaseRun) -> list[Suggestion]:
    """More shards for the step with the longest mean duration (SPLIT_BY_KEY when it has one, as
    `suggest` names it)."""
    stats = duration_stats(cr.samples)
    longest = max(stats.values(), key=lambda st: st.mean)
    single = next(s for s in cr.case.steps if s.step_id == longest.node_id).parallelism == 1
    return [
        Suggestion(longest.node_id, "the longest step", "SPLIT_BY_KEY" if single else "INCREASE_PARALLELISM")
    ]


def online_alerts(cr: CaseRun, rule: str = "clean") -> list[Alert]:
    """Each run's alerts against the statistics of the runs before it.

    `rule` "clean": `detect_anomalies` against a baseline of the earlier samples it did not alert on
    (an alerted run is not a normal run to compare with); "all": against every earlier sample; "naive":
    an alert whenever a run is slower than the mean of every earlier sample (after 3 of them).
    """
    if rule not in ALERT_RULES:
        raise ValueError(f"rule: expected one of {', '.join(ALERT_RULES)}, got {rule!r}")
    alerts: list[Alert] = []
    seen: list[Sample] = []
    for r in range(cr.runs):
        rid = run_id(cr.case, r)
        current = [s for s in cr.samples if s.run_id == rid]
        baseline = duration_stats(seen)
        for s in current:
            st = baseline.get(s.node_id)
            alert = None
            if st is None:
                pass
            elif rule == "naive":
                if st.count >= 3 and s.duration_s > st.mean:
                    alert = Alert(rid, s.node_id, "SLOW", s.duration_s, st.mean, 0.0, "above the mean")
            else:
                alert = detect_anomalies(st, s, VARIANCE, min_slack_s=MIN_SLACK_S)
            if alert is not None:
                alerts.append(alert)
            if alert is None or rule != "clean":
                seen.append(s)
    return alerts


def _shards(parallelism: int, slots: int) -> int:
    """The shard count a parallelism suggestion means (as `suggest` computes its target)."""
    return min(slots, max(2 * parallelism, 4))


def verify(cr: CaseRun, step_id: str, seed: int, min_gain_ratio: float = 0.1) -> bool:
    """Whether raising the step's parallelism really shortens the measured makespan by the ratio."""
    case = cr.case
    step = next(s for s in case.steps if s.step_id == step_id)
    shards = _shards(step.parallelism, cr.slots)
    if shards <= step.parallelism:
        return False
    base = run_case(replace(case, slow_rank=None, slow_factor=1.0), seed, VERIFY_RUNS)
    trial = run_case(case.with_parallelism(step_id, shards), seed, VERIFY_RUNS)
    before, after = statistics.fmean(base.makespans()), statistics.fmean(trial.makespans())
    return before - after >= min_gain_ratio * before


# --- the experiment ---------------------------------------------------------------------------------


@dataclass(slots=True)
class CaseResult:
    """One case's truth and predictions, every pair prefixed with the case name."""

    kind: str
    truth: set[tuple[str, str]]
    verified: set[tuple[str, str]]
    predicted: dict[str, set[tuple[str, str]]]
    alert_truth: set[tuple[str, str]]
    alerts: dict[str, list[Alert]]


def measure_case(case: Case, seed: int, runs: int) -> CaseResult:
    """Run a case, verify the parallelism suggestions outside its truth, and collect every pair."""
    case = replace(case, slow_from=runs // 2)
    cr = run_case(case, seed, runs)
    truth = injected_suggestions(cr)
    predicted = {
        "insights": {(s.node_id, s.action) for s in insight_suggestions(cr)},
        "naive": {(s.node_id, s.action) for s in naive_suggestions(cr)},
    }
    verified = set(truth)
    candidates = {p for pairs in predicted.values() for p in pairs if p[1] in PARALLEL_ACTIONS} - truth
    for step_id in sorted({p[0] for p in candidates}):
        if verify(cr, step_id, seed + 1):
            verified |= {p for p in candidates if p[0] == step_id}

    def tag(pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        return {(f"{case.name}/{a}", b) for a, b in pairs}

    return CaseResult(
        case.kind,
        tag(truth),
        tag(verified),
        {k: tag(v) for k, v in predicted.items()},
        injected_alerts(cr),
        {rule: online_alerts(cr, rule) for rule in ALERT_RULES},
    )


@dataclass(slots=True)
class Figures:
    """Scores per rule ("insights", "naive"), per case kind and over all ("all")."""

    cases: dict[str, int] = field(default_factory=dict)
    strict: dict[tuple[str, str], Score] = field(default_factory=dict)
    verified: dict[tuple[str, str], Score] = field(default_factory=dict)
    anomalies: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def _pairs_as_suggestions(pairs: Iterable[tuple[str, str]]) -> list[Suggestion]:
    return [Suggestion(node, "", action) for node, action in pairs]


def score(results: Sequence[CaseResult]) -> Figures:
    """Aggregate cases into the figures (micro-averaged over all pairs)."""
    figures = Figures()
    for kind in (*KINDS, "all"):
        chosen = [c for c in results if kind in ("all", c.kind)]
        figures.cases[kind] = len(chosen)
        for rule in SUGGESTION_RULES:
            predicted = _pairs_as_suggestions(p for c in chosen for p in c.predicted[rule])
            truth = {p for c in chosen for p in c.truth}
            pooled = {p for c in chosen for p in c.verified}
            figures.strict[(rule, kind)] = suggestion_accuracy(predicted, truth)
            figures.verified[(rule, kind)] = suggestion_accuracy(predicted, pooled)
        for rule in ALERT_RULES:
            alerts = [a for c in chosen for a in c.alerts[rule]]
            figures.anomalies[(rule, kind)] = anomaly_scores(
                alerts, {p for c in chosen for p in c.alert_truth}
            )
    figures.counts = {
        "expected suggestions": sum(len(c.truth) for c in results),
        "verified extra suggestions": sum(len(c.verified - c.truth) for c in results),
        "expected alerts": sum(len(c.alert_truth) for c in results),
    }
    return figures


def run_experiment(seeds: Sequence[int], cases_per_kind: int, runs: int = 12, jobs: int = 1) -> Figures:
    """`cases_per_kind` cases of every kind per seed, each run `runs` times, seeds spread over `jobs`
    processes; the scored figures (the same for any `jobs`: each seed's cases depend on it alone)."""
    if runs < 6:
        raise ValueError(f"runs: expected at least 6 (5 before suggestions count, half slowed), got {runs}")
    measure = functools.partial(_measure_seed, cases_per_kind=cases_per_kind, runs=runs)
    if jobs <= 1:
        per_seed = list(map(measure, seeds))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            per_seed = list(pool.map(measure, seeds))
    return score([result for results in per_seed for result in results])


def _measure_seed(seed: int, cases_per_kind: int, runs: int) -> list[CaseResult]:
    rng = random.Random(seed)
    results = []
    for kind in KINDS:
        for i in range(cases_per_kind):
            case = plan_case(rng, f"{kind}-{seed}-{i}", kind)
            results.append(measure_case(case, rng.getrandbits(32), runs))
    return results
