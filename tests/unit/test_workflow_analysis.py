"""Flow analysis (critical path, makespan, sections, resources) and history insights (stats, alerts)."""

from __future__ import annotations

import itertools
import random
import time

import pytest

from swarm.workflow.analysis import StepEstimate, analyze_flow, iso_duration
from swarm.workflow.insights import (
    Alert,
    Sample,
    Stats,
    Suggestion,
    alerts,
    anomaly_scores,
    detect_anomalies,
    duration_stats,
    suggest,
    suggestion_accuracy,
)

SEED_STEPS = [
    StepEstimate("extract-sales-data", 1800, parallelism=4, cpu_cores=2, memory_mb=4096, data_gb=20),
    StepEstimate("transform-sales", 3600, parallelism=16, cpu_cores=8, memory_mb=16384, data_gb=60),
    StepEstimate("analyze-sales", 7200, parallelism=1, cpu_cores=16, memory_mb=65536, data_gb=40),
]
SEED_EDGES = [("extract-sales-data", "transform-sales"), ("transform-sales", "analyze-sales")]


def test_seed_pipeline_shapes() -> None:
    result = analyze_flow(SEED_STEPS, SEED_EDGES, cluster_slots=16, average_by="step")
    body = result.to_json()
    assert body["criticalPath"] == ["extract-sales-data", "transform-sales", "analyze-sales"]
    assert body["bottleneckNode"] == "analyze-sales"
    assert body["parallelizableSections"] == [
        {"nodes": ["extract-sales-data"], "maxParallelism": 4},
        {"nodes": ["transform-sales"], "maxParallelism": 16},
    ]
    usage = body["estimatedResourceUsage"]
    assert usage["cpuCores"]["min"] == 2
    assert usage["cpuCores"]["max"] == 16
    assert usage["cpuCores"]["average"] == pytest.approx(26 / 3, abs=0.01)
    assert usage["memoryMB"] == {"min": 4096, "max": 65536, "average": 28672}
    assert usage["dataProcessedGB"] == 120
    assert body["estimatedExecutionTime"] == "PT3H30M"
    assert body["layers"] == [["extract-sales-data"], ["transform-sales"], ["analyze-sales"]]


def test_duration_weighted_average_and_slot_cap() -> None:
    result = analyze_flow(SEED_STEPS, SEED_EDGES, cluster_slots=8)
    # (2*1800 + 8*3600 + 16*7200) / 12600
    assert result.resource_usage["cpuCores"]["average"] == pytest.approx(11.714, abs=0.001)
    assert result.parallelizable_sections[1] == {"nodes": ["transform-sales"], "maxParallelism": 8}
    # 16 shards on 8 slots run in two waves of an hour.
    assert result.critical_path_seconds == 1800 + 7200 + 7200
    assert result.estimated_seconds == 1800 + 7200 + 7200


def test_diamond_layers_sections_and_contention() -> None:
    steps = [
        StepEstimate("a", 10),
        StepEstimate("b", 30, parallelism=4),
        StepEstimate("c", 50, parallelism=4),
        StepEstimate("d", 5),
    ]
    edges = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
    result = analyze_flow(steps, edges, cluster_slots=4)
    assert result.layers == [["a"], ["b", "c"], ["d"]]
    assert result.critical_path == ["a", "c", "d"]
    assert result.bottleneck_node == "c"
    assert result.critical_path_seconds == 65
    # b and c compete for the 4 slots: c first (heavier path), then b: 10 + 50 + 30 + 5.
    assert result.estimated_seconds == 95
    assert result.parallelizable_sections == [{"nodes": ["b", "c"], "maxParallelism": 4}]
    roomy = analyze_flow(steps, edges, cluster_slots=8)
    assert roomy.estimated_seconds == 65
    assert roomy.parallelizable_sections == [{"nodes": ["b", "c"], "maxParallelism": 8}]


def test_waves_of_a_wide_step() -> None:
    result = analyze_flow([StepEstimate("wide", 5, parallelism=10)], [], cluster_slots=4)
    assert result.estimated_seconds == 15
    assert result.critical_path == ["wide"]


def test_absurd_parallelism_falls_back_to_the_lower_bound() -> None:
    start = time.perf_counter()
    result = analyze_flow([StepEstimate("a", 1, 10**9), StepEstimate("b", 0.5)], [], cluster_slots=2)
    assert time.perf_counter() - start < 3.0
    assert not result.simulated
    assert result.estimated_seconds == pytest.approx((10**9 + 0.5) / 2)
    assert analyze_flow([StepEstimate("a", 1, 1000)], [], 3).simulated


def test_simulation_bounds_on_random_dags() -> None:
    rng = random.Random(7)
    for _ in range(30):
        n = rng.randint(1, 40)
        steps = [StepEstimate(f"s{i}", rng.uniform(0, 20), rng.choice([1, 2, 3, 8])) for i in range(n)]
        edges = [(f"s{a}", f"s{b}") for a in range(n) for b in range(a + 1, n) if rng.random() < 0.1]
        slots = rng.randint(1, 6)
        result = analyze_flow(steps, edges, slots)
        total_work = sum(s.duration_s * s.parallelism for s in steps)
        assert result.estimated_seconds >= result.critical_path_seconds - 1e-9
        assert result.estimated_seconds >= total_work / slots - 1e-9
        assert result.estimated_seconds <= sum(result.weights.values()) + 1e-9
        position = {node: k for k, layer in enumerate(result.layers) for node in layer}
        assert all(position[a] < position[b] for a, b in edges)


def test_ten_thousand_steps_in_well_under_a_second() -> None:
    rng = random.Random(1)
    n = 10_000
    steps = [StepEstimate(f"s{i}", rng.uniform(1, 100), rng.choice([1, 1, 2, 4, 16])) for i in range(n)]
    edges: set[tuple[str, str]] = set()
    while len(edges) < 20_000:
        a = rng.randrange(n - 1)
        edges.add((f"s{a}", f"s{rng.randrange(a + 1, min(n, a + 200))}"))
    start = time.perf_counter()
    result = analyze_flow(steps, sorted(edges), cluster_slots=64)
    elapsed = time.perf_counter() - start
    assert result.critical_path
    assert elapsed < 1.0  # about 0.1 s on a laptop


def test_empty_and_zero_duration() -> None:
    empty = analyze_flow([], [], 4)
    assert (empty.critical_path, empty.bottleneck_node, empty.estimated_seconds) == ([], None, 0.0)
    assert empty.to_json()["estimatedExecutionTime"] == "PT0S"
    assert analyze_flow([StepEstimate("a", 0)], [], 1).bottleneck_node is None


@pytest.mark.parametrize(
    ("steps", "edges", "slots", "fragment"),
    [
        ([StepEstimate("a", 1), StepEstimate("b", 1)], [("a", "b"), ("b", "a")], 1, "cycle"),
        ([StepEstimate("a", 1)], [("a", "zz")], 1, "unknown step 'zz'"),
        ([StepEstimate("a", 1), StepEstimate("a", 2)], [], 1, "duplicate"),
        ([StepEstimate("a", 1, parallelism=0)], [], 1, "parallelism"),
        ([StepEstimate("a", -1)], [], 1, "duration_s"),
        ([StepEstimate("a", 1)], [], 0, "cluster_slots"),
    ],
)
def test_bad_input(
    steps: list[StepEstimate], edges: list[tuple[str, str]], slots: int, fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        analyze_flow(steps, edges, slots)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (9900, "PT2H45M"),
        (0, "PT0S"),
        (0.25, "PT0.25S"),
        (3661.5, "PT1H1M1.5S"),
        (93600, "PT26H"),
        (60, "PT1M"),
    ],
)
def test_iso_duration(seconds: float, text: str) -> None:
    assert iso_duration(seconds) == text


# ------------------------------------------------------------------------------------------------ insights


def run(i: int, node: str = "n", duration: float = 10.0, ok: bool = True, **kw: float | int | str) -> Sample:
    return Sample(f"r{i}", node, float(i * 100), duration, ok, **kw)  # type: ignore[arg-type]


def test_duration_stats() -> None:
    samples = [run(i, duration=10 + 2 * i) for i in range(5)] + [run(9, duration=1, ok=False)]
    st = duration_stats(samples)["n"]
    assert st.count == 6
    assert st.mean == pytest.approx(14)
    assert st.p50 == pytest.approx(14)
    assert st.p95 == pytest.approx(17.6)
    assert st.stdev == pytest.approx(3.1623, abs=1e-3)
    assert st.success_rate == pytest.approx(5 / 6)
    assert st.trend == pytest.approx(2.0)


def test_utilisation_and_devices() -> None:
    samples = [
        run(i, duration=10, cpu_s=8, requested_cpu=4, peak_memory_mb=500, requested_memory_mb=2000, device=d)
        for i, d in enumerate(["x", "y", "x", "y"])
    ]
    st = duration_stats(samples)["n"]
    assert st.cpu_utilization == pytest.approx(0.2)
    assert st.memory_utilization == pytest.approx(0.25)
    assert st.recent_devices == (("x", 10), ("y", 10), ("x", 10), ("y", 10)) and st.usual == 10
    assert duration_stats([run(0)])["n"].cpu_utilization is None


def baseline(mean: float, count: int = 20) -> Stats:
    return Stats("n", count, mean, mean, mean, 0.0, 1.0, 0.0)


def test_anomaly_rule() -> None:
    assert detect_anomalies(baseline(100), run(1, duration=125)) is None
    slow = detect_anomalies(baseline(100), run(1, duration=140))
    assert slow is not None
    assert (slow.kind, slow.run_id, slow.node_id) == ("SLOW", "r1", "n")
    assert slow.deviation == pytest.approx(0.4)
    fast = detect_anomalies(baseline(100), run(1, duration=60))
    assert fast is not None
    assert fast.kind == "FAST"
    assert detect_anomalies(baseline(100), run(1, duration=10, ok=False)) is None  # failing fast
    assert detect_anomalies(baseline(0.5), run(1, duration=1.5)) is None  # under the 2 s slack
    assert detect_anomalies(baseline(100, count=2), run(1, duration=500)) is None  # no baseline yet
    assert detect_anomalies(baseline(100), run(1, duration=115), variance=0.1) is not None


def test_resource_and_reliability_rules() -> None:
    samples = []
    for i in range(10):
        samples.append(
            run(i, "lazy", 10, cpu_s=4, requested_cpu=4, peak_memory_mb=900, requested_memory_mb=1000)
        )
        samples.append(
            run(i, "fat", 10, cpu_s=36, requested_cpu=4, peak_memory_mb=300, requested_memory_mb=4096)
        )
        samples.append(run(i, "flaky", 10, ok=i % 3 != 0))
        samples.append(run(i, "gpu", 30 if i % 2 else 10, device="slow" if i % 2 else f"d{i % 4}"))
    found = {(s.node_id, s.action) for s in suggest([], [], duration_stats(samples), 4)}
    assert found == {
        ("lazy", "RIGHTSIZE_CPU"),
        ("fat", "RIGHTSIZE_MEMORY"),
        ("flaky", "INVESTIGATE_FAILURES"),
        ("gpu", "SLOW_DEVICE"),
    }


def test_parallelism_advice_on_the_seed_pipeline() -> None:
    advice = suggest(SEED_STEPS, SEED_EDGES, {}, cluster_slots=16)
    assert [(s.node_id, s.action) for s in advice] == [("analyze-sales", "SPLIT_BY_KEY")]
    assert advice[0].expected_gain_s == pytest.approx(7200 - 1800)
    assert advice[0].to_json()["nodeId"] == "analyze-sales"


def synthetic_history(
    rng: random.Random,
) -> tuple[list[StepEstimate], list[tuple[str, str]], list[Sample], set[tuple[str, str]]]:
    """A layered DAG, 30 runs of history, and a set of injected faults with the action each calls for."""
    slots, layers = 8, [[f"L{k}n{j}" for j in range(3)] for k in range(3)]
    names = [n for layer in layers for n in layer]
    edges = [(a, b) for upper, lower in itertools.pairwise(layers) for a in upper for b in lower]
    steps = {n: StepEstimate(n, rng.uniform(20, 40), parallelism=slots) for n in names}
    hot = rng.choice(names)
    wide = rng.random() < 0.5
    steps[hot] = StepEstimate(hot, rng.uniform(400, 600), parallelism=2 if wide else 1)
    injected = {(hot, "INCREASE_PARALLELISM" if wide else "SPLIT_BY_KEY")}
    cpu_lazy, mem_fat, flaky, slow_dev = (
        rng.sample(names, 2),
        rng.sample(names, 2),
        rng.choice(names),
        rng.choice(names),
    )
    injected |= {(n, "RIGHTSIZE_CPU") for n in cpu_lazy} | {(n, "RIGHTSIZE_MEMORY") for n in mem_fat}
    injected |= {(flaky, "INVESTIGATE_FAILURES"), (slow_dev, "SLOW_DEVICE")}
    samples = []
    for r in range(30):
        for n in names:
            step, device = steps[n], rng.choice(["d0", "d1", "d2", "d3"])
            duration = (
                step.duration_s * rng.uniform(0.9, 1.1) * (2.5 if n == slow_dev and device == "d3" else 1)
            )
            use = rng.uniform(0.1, 0.3) if n in cpu_lazy else rng.uniform(0.65, 0.95)
            peak = 4096 * (rng.uniform(0.1, 0.35) if n in mem_fat else rng.uniform(0.6, 0.95))
            ok = rng.random() < (0.6 if n == flaky else 0.995)
            cpu_s = duration * 2 * step.parallelism * use
            samples.append(
                Sample(f"run{r}", n, r * 3600.0, duration, ok, cpu_s, peak, 2, 4096, step.parallelism, device)
            )
    return list(steps.values()), edges, samples, injected


def test_suggestion_accuracy_on_injected_faults() -> None:
    suggestions: list[Suggestion] = []
    injected_all: set[tuple[str, str]] = set()
    for seed in range(20):
        steps, edges, samples, injected = synthetic_history(random.Random(seed))
        made = suggest(steps, edges, duration_stats(samples), cluster_slots=8)
        # Tag by seed so that equal node names in different scenarios stay apart.
        suggestions += [Suggestion(f"{seed}/{s.node_id}", s.message, s.action) for s in made]
        injected_all |= {(f"{seed}/{n}", a) for n, a in injected}
    score = suggestion_accuracy(suggestions, injected_all)
    assert score.f1 > 0.85, score
    assert score.precision > 0.85, score


def test_anomaly_precision_and_recall_on_injected_slow_runs() -> None:
    rng = random.Random(42)
    means = {"tiny": 0.5, "small": 8.0, "mid": 60.0, "big": 900.0}
    history = [
        Sample(f"h{i}", n, float(i), m * rng.gauss(1, 0.08), True)
        for i in range(30)
        for n, m in means.items()
    ]
    stats = duration_stats(history)
    alerts, injected = [], set()
    for i in range(300):
        node = rng.choice(list(means))
        factor = rng.uniform(1.5, 3.0) if rng.random() < 0.1 else rng.gauss(1, 0.08)
        sample = Sample(f"t{i}", node, 1000.0 + i, means[node] * factor, True)
        if factor >= 1.5 and means[node] * (factor - 1) > 2.0:
            injected.add((sample.run_id, node))
        alert = detect_anomalies(stats[node], sample, 0.3)
        if alert is not None:
            alerts.append(alert)
    precision, recall = anomaly_scores(alerts, injected)
    assert precision > 0.8
    assert recall > 0.8


def test_score_edge_cases() -> None:
    assert suggestion_accuracy([], set()) == (1.0, 1.0, 1.0)
    assert suggestion_accuracy([], {("a", "X")}) == (0.0, 0.0, 0.0)
    assert anomaly_scores([], set()) == (1.0, 1.0)
    one = Suggestion("a", "m", "X")
    assert suggestion_accuracy([one, Suggestion("b", "m", "Y")], {("a", "X")}) == pytest.approx(
        (0.5, 1.0, 2 / 3)
    )


def test_alerts_equal_each_run_judged_against_the_statistics_of_the_normal_runs_before_it() -> None:
    """`alerts` keeps a running baseline; it must say what `detect_anomalies` says of every run given the
    full statistics (`duration_stats`) of that step's earlier runs that were not alerted on."""
    rng = random.Random(11)
    samples = [
        Sample(f"r{i}", rng.choice("ab"), float(i), rng.choice((10.0, 10.5, 30.0, 2.0)), rng.random() > 0.2)
        for i in range(300)
    ]
    expected: list[Alert] = []
    normal: dict[str, list[Sample]] = {}
    for s in samples:
        before = normal.setdefault(s.node_id, [])
        alert = detect_anomalies(duration_stats(before)[s.node_id], s) if before else None
        if alert is None:
            before.append(s)
        else:
            expected.append(alert)
    assert expected and sorted(alerts(samples), key=lambda a: a.run_id) == sorted(
        expected, key=lambda a: a.run_id
    )
