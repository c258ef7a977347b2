"""Analysis from measured history: per-step statistics, anomaly alerts, suggestions and their scores.

Theory of operation
-------------------
A `Sample` is one run of one step: `duration_s` its wall time (first shard start to last shard end),
`cpu_s` the CPU seconds of all its shards together, `peak_memory_mb` the largest shard's peak,
`requested_cpu` / `requested_memory_mb` the per-shard request, `device` where it ran (one device per run,
or the slowest one's name). Everything here is a pure function of samples; nothing reads a clock.

- `duration_stats`: duration figures come from the successful samples (a failure's duration says how
  fast it failed, not how long the work takes), falling back to all samples when none succeeded;
  `trend` is the least-squares slope of duration over the last `window` successful runs, in seconds per
  run (positive = getting slower). Utilisations use the last `window` successful runs: CPU is
  sum(cpu_s) / sum(duration_s * requested_cpu * parallelism), which assumes the shards overlapped, so it
  errs on the side of "busy"; memory is max(peak) / request.
- `detect_anomalies`: a run deviates when |duration - mean| > max(variance * mean, min_slack_s), i.e. the
  seed's `executionDurationVariance` relative to the baseline mean, but never less than `min_slack_s`
  (2 s) so that sub-second steps do not alert on scheduling noise; no alert before `min_count` (3)
  successful baseline runs. Slower is "SLOW"; faster is "FAST" and only for successful runs (failing fast
  is the failure's business, not an anomaly of duration).
- `suggest`: INCREASE_PARALLELISM / SPLIT_BY_KEY for the heaviest critical-path steps, with the gain
  computed by re-running `analyze_flow` with the step's parallelism raised (work conserved: per-shard
  duration scales down by p/p'); suggested only when the estimated makespan drops by at least
  `min_gain_ratio` (10 %). RIGHTSIZE_CPU / RIGHTSIZE_MEMORY when use < 50 % of the request;
  INVESTIGATE_FAILURES when the success rate < 90 %. SLOW_DEVICE pools the steps: each recent run of a
  step is measured against that step's usual duration (its 25th percentile, a baseline a slowdown of
  part of its history does not move), and a device whose recent runs take a median 1.5x their steps'
  usual time, while the cluster's median ratio stays near 1, is slow; every step that ran on it at least
  twice recently, at 1.5x or more, gets the suggestion. Comparing a step's devices with each other
  instead finds nothing when, as in a small swarm, a step keeps running on the same device. Statistics
  need `min_runs` (5) runs before they count.
- `alerts`: every run's anomaly against the runs before it, leaving alerted runs out of the baseline (a
  baseline that absorbs anomalies stops seeing them after two or three).
- Scores: `suggestion_accuracy` returns precision, recall and F1 of (node, action) pairs against the
  injected faults; the seed's "suggestion accuracy" figure is the F1 (precision alone would reward
  saying nothing). `anomaly_scores` returns precision and recall of (run, node) alerts; the seed's
  "anomaly prediction accuracy" needs both to pass.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from swarm.workflow.analysis import StepEstimate, analyze_flow

__all__ = [
    "ACTIONS",
    "Alert",
    "Sample",
    "Score",
    "Stats",
    "Suggestion",
    "alerts",
    "anomaly_scores",
    "detect_anomalies",
    "duration_stats",
    "suggest",
    "suggestion_accuracy",
]

ACTIONS = (
    "INCREASE_PARALLELISM",
    "SPLIT_BY_KEY",
    "RIGHTSIZE_CPU",
    "RIGHTSIZE_MEMORY",
    "INVESTIGATE_FAILURES",
    "SLOW_DEVICE",
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured run of one step (see the module docstring for what each figure covers)."""

    run_id: str
    node_id: str
    started_at: float
    duration_s: float
    ok: bool
    cpu_s: float = 0.0
    peak_memory_mb: float = 0.0
    requested_cpu: float = 1.0
    requested_memory_mb: float = 0.0
    parallelism: int = 1
    device: str = ""


@dataclass(frozen=True, slots=True)
class Stats:
    """Figures for one step over its history; utilisations are None when not measured."""

    node_id: str
    count: int
    mean: float
    p50: float
    p95: float
    stdev: float
    success_rate: float
    trend: float
    cpu_utilization: float | None = None
    memory_utilization: float | None = None
    requested_cpu: float = 0.0
    requested_memory_mb: float = 0.0
    peak_memory_mb: float = 0.0
    #: The step's usual duration: the 25th percentile of its successful runs.
    usual: float = 0.0
    #: (device, duration) of the last `window` runs that name a device, oldest first.
    recent_devices: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Alert:
    """A run whose duration left the expected band."""

    run_id: str
    node_id: str
    kind: str  # SLOW | FAST
    duration_s: float
    expected_s: float
    deviation: float  # (duration - expected) / expected
    message: str


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One recommendation; `expected_gain_s` is the estimated saving per run (0 for resource resizing)."""

    node_id: str
    message: str
    action: str
    expected_gain_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The seed's `{"nodeId", "message", "action"}` plus the estimated gain."""
        return {
            "nodeId": self.node_id,
            "message": self.message,
            "action": self.action,
            "expectedGainSeconds": round(self.expected_gain_s, 3),
        }


class Score(NamedTuple):
    """Precision, recall and their harmonic mean."""

    precision: float
    recall: float
    f1: float


def duration_stats(samples: Iterable[Sample], window: int = 20) -> dict[str, Stats]:
    """Statistics per step (see the module docstring for which samples feed which figure)."""
    by_node: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_node[s.node_id].append(s)
    return {
        node: _stats(node, sorted(runs, key=lambda s: s.started_at), window) for node, runs in by_node.items()
    }


def _stats(node: str, runs: list[Sample], window: int) -> Stats:
    ok = [s for s in runs if s.ok]
    basis = ok or runs
    durations = sorted(s.duration_s for s in basis)
    recent = basis[-window:]
    cpu_capacity = sum(s.duration_s * s.requested_cpu * s.parallelism for s in recent if s.cpu_s > 0)
    cpu_used = sum(s.cpu_s for s in recent if s.cpu_s > 0)
    mem = [s for s in recent if s.peak_memory_mb > 0 and s.requested_memory_mb > 0]
    last = runs[-1]
    return Stats(
        node_id=node,
        count=len(runs),
        mean=statistics.fmean(durations),
        p50=_percentile(durations, 0.5),
        p95=_percentile(durations, 0.95),
        stdev=statistics.stdev(durations) if len(durations) > 1 else 0.0,
        success_rate=len(ok) / len(runs),
        trend=_slope([s.duration_s for s in recent]),
        cpu_utilization=cpu_used / cpu_capacity if cpu_capacity > 0 else None,
        memory_utilization=max(s.peak_memory_mb / s.requested_memory_mb for s in mem) if mem else None,
        requested_cpu=last.requested_cpu,
        requested_memory_mb=last.requested_memory_mb,
        peak_memory_mb=max((s.peak_memory_mb for s in recent), default=0.0),
        usual=_percentile(durations, 0.25),
        recent_devices=tuple((s.device, s.duration_s) for s in recent if s.device),
    )


def _percentile(ordered: list[float], q: float) -> float:
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _slope(ys: list[float]) -> float:
    n = len(ys)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(ys)
    num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(ys))
    den = sum((x - mean_x) ** 2 for x in range(n))
    return num / den


def detect_anomalies(
    baseline: Stats, sample: Sample, variance: float = 0.3, *, min_slack_s: float = 2.0, min_count: int = 3
) -> Alert | None:
    """An alert when the sample's duration leaves mean +- max(variance * mean, min_slack_s), else None."""
    return _anomaly(
        baseline.count, baseline.success_rate, baseline.mean, sample, variance, min_slack_s, min_count
    )


def _anomaly(
    count: int,
    success_rate: float,
    expected: float,
    sample: Sample,
    variance: float,
    min_slack_s: float,
    min_count: int = 3,
) -> Alert | None:
    """`detect_anomalies` on a baseline of `count` runs, `success_rate` of them ok, mean `expected`."""
    if count < min_count or count * success_rate < min_count:
        return None
    slack = max(variance * expected, min_slack_s)
    delta = sample.duration_s - expected
    if delta > slack:
        kind = "SLOW"
    elif -delta > slack and sample.ok:
        kind = "FAST"
    else:
        return None
    deviation = delta / expected if expected > 0 else math.inf
    return Alert(
        run_id=sample.run_id,
        node_id=sample.node_id,
        kind=kind,
        duration_s=sample.duration_s,
        expected_s=expected,
        deviation=deviation,
        message=(
            f"{sample.node_id} took {sample.duration_s:.1f}s in run {sample.run_id}, expected "
            f"{expected:.1f}s +- {slack:.1f}s ({deviation:+.0%})"
        ),
    )


def suggest(
    steps: Sequence[StepEstimate],
    edges: Sequence[tuple[str, str]],
    stats: Mapping[str, Stats],
    cluster_slots: int,
    *,
    min_runs: int = 5,
    min_gain_ratio: float = 0.1,
    candidates: int = 3,
) -> list[Suggestion]:
    """Suggestions, largest expected gain first (see the module docstring for each rule)."""
    out = _parallelism(steps, edges, stats, cluster_slots, min_runs, min_gain_ratio, candidates)
    for node, st in sorted(stats.items()):
        if st.count >= min_runs:
            out.extend(_resources(node, st))
            out.extend(_reliability(node, st))
    out.extend(_slow_devices(stats, min_runs))
    out.sort(key=lambda s: (-s.expected_gain_s, s.action, s.node_id))
    return out


def _parallelism(
    steps: Sequence[StepEstimate],
    edges: Sequence[tuple[str, str]],
    stats: Mapping[str, Stats],
    slots: int,
    min_runs: int,
    min_gain_ratio: float,
    candidates: int,
) -> list[Suggestion]:
    # Measured wall time replaces the declared estimate; it includes the waves, so divide them back out.
    # The usual duration (25th percentile), not the mean: a slow device or a few slow runs are no reason
    # to split a step.
    measured = [
        replace(s, duration_s=stats[s.node_id].usual / math.ceil(s.parallelism / slots))
        if s.node_id in stats and stats[s.node_id].count >= min_runs
        else s
        for s in steps
    ]
    base = analyze_flow(measured, edges, slots)
    if base.estimated_seconds <= 0:
        return []
    by_id = {s.node_id: i for i, s in enumerate(measured)}
    heaviest = sorted(base.critical_path, key=lambda n: -base.weights[n])[:candidates]
    out: list[Suggestion] = []
    for node in heaviest:
        i = by_id[node]
        step = measured[i]
        target = min(slots, max(2 * step.parallelism, 4))
        if target <= step.parallelism:
            continue
        trial = list(measured)
        trial[i] = replace(step, parallelism=target, duration_s=step.duration_s * step.parallelism / target)
        gain = base.estimated_seconds - analyze_flow(trial, edges, slots).estimated_seconds
        if gain < max(min_gain_ratio * base.estimated_seconds, 1.0):
            continue
        share = f"{gain:.0f}s of {base.estimated_seconds:.0f}s ({gain / base.estimated_seconds:.0%})"
        if step.parallelism == 1:
            message = f"critical single-shard step: split it by key into {target} shards, saving {share}"
            out.append(Suggestion(node, message, "SPLIT_BY_KEY", gain))
        else:
            message = f"raise parallelism from {step.parallelism} to {target}, saving {share}"
            out.append(Suggestion(node, message, "INCREASE_PARALLELISM", gain))
    return out


def _resources(node: str, st: Stats) -> list[Suggestion]:
    out: list[Suggestion] = []
    if st.cpu_utilization is not None and st.cpu_utilization < 0.5 and st.requested_cpu > 0:
        want = max(0.5, math.ceil(st.requested_cpu * st.cpu_utilization * 1.25 * 2) / 2)
        message = (
            f"uses {st.cpu_utilization:.0%} of its {st.requested_cpu:g} requested cores; request {want:g}"
        )
        out.append(Suggestion(node, message, "RIGHTSIZE_CPU"))
    if st.memory_utilization is not None and st.memory_utilization < 0.5 and st.requested_memory_mb > 0:
        want_mb = max(256, math.ceil(st.peak_memory_mb * 1.25 / 256) * 256)
        message = (
            f"peaks at {st.memory_utilization:.0%} of its {st.requested_memory_mb:g} MB request; "
            f"request {want_mb} MB"
        )
        out.append(Suggestion(node, message, "RIGHTSIZE_MEMORY"))
    return out


def _reliability(node: str, st: Stats) -> list[Suggestion]:
    out: list[Suggestion] = []
    if st.success_rate < 0.9:
        failed = round(st.count * (1 - st.success_rate))
        message = f"{failed} of its last {st.count} runs failed ({st.success_rate:.0%} success)"
        out.append(Suggestion(node, message, "INVESTIGATE_FAILURES"))
    return out


SLOW_RATIO = 1.5


def _slow_devices(stats: Mapping[str, Stats], min_runs: int) -> list[Suggestion]:
    """SLOW_DEVICE (see the module docstring): a step's runs on one device against its runs elsewhere,
    or, where it ran nowhere else, against its usual time, when other steps slowed down there too."""
    found: dict[tuple[str, str], tuple[float, float]] = {}  # (step, device) -> (factor, seconds lost)
    ratios: dict[str, list[tuple[str, float, float]]] = defaultdict(list)  # device -> (step, ratio, s)
    for node, st in stats.items():
        if st.count < min_runs or st.usual <= 0:
            continue
        on: dict[str, list[float]] = defaultdict(list)
        for device, duration in st.recent_devices:
            on[device].append(duration)
            ratios[device].append((node, duration / st.usual, duration - st.usual))
        for device, there in on.items():
            elsewhere = [x for d, xs in on.items() if d != device for x in xs]
            if len(there) >= 2 and len(elsewhere) >= 2:
                mean, other = statistics.fmean(there), statistics.fmean(elsewhere)
                if other > 0 and mean >= SLOW_RATIO * other:
                    found[(node, device)] = (mean / other, mean - other)
    for device, runs in ratios.items():
        # Against the other devices' runs: the slow device may be the one that ran most of the work.
        others = [r for d, rs in ratios.items() if d != device for _, r, _ in rs]
        typical = statistics.median(others) if others else 1.0
        if len(runs) < 2 or statistics.median(r for _, r, _ in runs) < SLOW_RATIO * typical:
            continue
        count: dict[str, int] = defaultdict(int)
        slow: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for node, ratio, lost in runs:
            count[node] += 1
            if ratio >= SLOW_RATIO * typical:
                slow[node].append((ratio, lost))
        for node, seen in slow.items():
            # One slow run is enough once the step ran there twice: the device, not the run, is slow.
            if count[node] >= 2 and (node, device) not in found:
                found[(node, device)] = (
                    statistics.median(r for r, _ in seen),
                    statistics.fmean(x for _, x in seen),
                )
    return [
        Suggestion(
            node,
            f"its runs on {device} take {factor:.1f}x as long as elsewhere or as usual: check or avoid it",
            "SLOW_DEVICE",
            lost,
        )
        for (node, device), (factor, lost) in sorted(found.items())
    ]


def alerts(samples: Iterable[Sample], variance: float = 0.3, *, min_slack_s: float = 2.0) -> list[Alert]:
    """Each run's alert, if any, against the earlier runs of its step that were not alerted on."""
    by_node: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_node[s.node_id].append(s)
    out: list[Alert] = []
    for runs in (by_node[node] for node in sorted(by_node)):
        # The baseline grows by one normal run at a time: keep what `_stats` would derive of it (the
        # mean of the ok durations, or of all when none is ok) instead of recomputing every statistic
        # for every run, which made a DAG's alerts cubic in its history (a third of a node's CPU while
        # 100 runs went at once).
        durations: list[float] = []
        ok_durations: list[float] = []
        for s in sorted(runs, key=lambda s: s.started_at):
            alert = None
            if durations:
                basis = ok_durations or durations
                mean = math.fsum(basis) / len(basis)  # statistics.fmean, without its checks
                rate = len(ok_durations) / len(durations)
                alert = _anomaly(len(durations), rate, mean, s, variance, min_slack_s)
            if alert is None:
                durations.append(s.duration_s)
                if s.ok:
                    ok_durations.append(s.duration_s)
            else:
                out.append(alert)
    return out


def _score(predicted: set[Any], truth: set[Any]) -> Score:
    hits = len(predicted & truth)
    precision = hits / len(predicted) if predicted else (1.0 if not truth else 0.0)
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return Score(precision, recall, f1)


def suggestion_accuracy(suggestions: Iterable[Suggestion], injected: set[tuple[str, str]]) -> Score:
    """Precision, recall and F1 of the suggested (node, action) pairs; the seed's accuracy figure is F1."""
    return _score({(s.node_id, s.action) for s in suggestions}, injected)


def anomaly_scores(alerts: Iterable[Alert], injected_slow: set[tuple[str, str]]) -> tuple[float, float]:
    """(precision, recall) of the alerted (run, node) pairs against the runs made slow on purpose."""
    score = _score({(a.run_id, a.node_id) for a in alerts}, injected_slow)
    return score.precision, score.recall
