"""Static flow analysis of a DAG: critical path, makespan estimate, bottleneck, layers, resources.

Theory of operation
-------------------
Cost model. A step with `parallelism` p is p shards, each taking `duration_s`; every shard holds one of the
cluster's `cluster_slots` s. Alone on the cluster a step therefore takes `duration_s * ceil(p / s)` (its
shards run in ceil(p/s) waves); that figure is the step's *weight*.

- `critical_path` is the heaviest root-to-leaf path by weight (ties go to the step listed first), and
  `critical_path_seconds` its weight: a lower bound on any schedule.
- `estimated_seconds` is the makespan of a list-scheduling simulation with s slots: a step becomes ready
  when all its parents finished; free slots go to the ready step with the heaviest remaining path (its
  "bottom level"), a shard at a time; so branches compete for slots, which the critical path ignores.
  Always >= `critical_path_seconds`. It ignores data transfer, queueing behind other DAGs and placement
  constraints. Cost O((V + E) log V + shard groups started); a step's shards start in groups as slots free
  up, which is about ceil(p / s) groups per step. A pathological definition (parallelism in the millions
  on a few slots) could need millions of groups, so past `MAX_EVENTS` the simulation stops and the estimate
  falls back to the lower bound max(critical path, total work / s), with `simulated` false.
- `bottleneck_node` is the critical-path step with the largest weight (the largest share of the path).
- `layers` is the longest-path layering by edge count from the roots (a step sits one layer below its
  deepest parent); steps keep their input order inside a layer. The cockpit lays DAGs out with it.
- `parallelizable_sections`: each layer holding several steps, as one section whose `maxParallelism` is the
  layer's summed parallelism capped at s; and each step alone in its layer with parallelism > 1, as a
  section of its own (the seed's example: a fanned-out map stage). Sections with a cap below 2 are omitted.
- `resource_usage`: min and max of the per-shard requests over the steps, the average weighted by each
  step's duration (`average_by="step"` gives the plain mean the seed's example numbers imply), and the
  summed `data_gb`.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["MAX_EVENTS", "FlowAnalysis", "StepEstimate", "analyze_flow", "iso_duration"]

MAX_EVENTS = 500_000


@dataclass(frozen=True, slots=True)
class StepEstimate:
    """What the analysis needs to know of one step: its expected duration per shard and its requests."""

    node_id: str
    duration_s: float
    parallelism: int = 1
    cpu_cores: float = 1.0
    memory_mb: float = 256.0
    data_gb: float = 0.0


@dataclass(frozen=True, slots=True)
class FlowAnalysis:
    """The result of `analyze_flow`; `to_json` gives the seed's camelCase fields."""

    critical_path: list[str]
    critical_path_seconds: float
    estimated_seconds: float
    bottleneck_node: str | None
    parallelizable_sections: list[dict[str, Any]]
    resource_usage: dict[str, Any]
    layers: list[list[str]]
    weights: dict[str, float] = field(default_factory=dict)
    simulated: bool = True

    def to_json(self) -> dict[str, Any]:
        """Seed-004 shapes, flat: the API nests them under `dataFlowAnalysis` and beside it as it needs."""
        return {
            "criticalPath": list(self.critical_path),
            "bottleneckNode": self.bottleneck_node,
            "parallelizableSections": [dict(s) for s in self.parallelizable_sections],
            "estimatedExecutionTime": iso_duration(self.estimated_seconds),
            "estimatedResourceUsage": self.resource_usage,
            "layers": [list(layer) for layer in self.layers],
        }


def iso_duration(seconds: float) -> str:
    """ISO-8601 duration in hours, minutes and seconds (9900 -> "PT2H45M"; 0 -> "PT0S").

    Hours are not folded into days: a "day" is not always 24 hours, and PT26H is valid ISO-8601.
    """
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"duration must be a finite number >= 0, got {seconds}")
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = rest / 1000
    out = "PT"
    if hours:
        out += f"{hours}H"
    if minutes:
        out += f"{minutes}M"
    if secs or out == "PT":
        out += f"{secs:.3f}".rstrip("0").rstrip(".") + "S"
    return out


def analyze_flow(
    steps: Sequence[StepEstimate],
    edges: Sequence[tuple[str, str]],
    cluster_slots: int,
    *,
    average_by: Literal["duration", "step"] = "duration",
) -> FlowAnalysis:
    """Analyse a DAG under the wave cost model (see the module docstring).

    Raises ValueError for a cycle, an edge naming an unknown step, a duplicate step id, a negative
    duration, a parallelism below 1 or fewer than one slot: the caller has validated the definition,
    so these are bugs, not user errors.
    """
    if cluster_slots < 1:
        raise ValueError(f"cluster_slots must be >= 1, got {cluster_slots}")
    index = _index(steps)
    children, parents = _adjacency(index, edges)
    order = _topological(len(steps), children, parents)
    weights = [s.duration_s * math.ceil(s.parallelism / cluster_slots) for s in steps]
    path, path_seconds = _critical_path(order, parents, weights)
    bottleneck = max(path, key=lambda i: weights[i]) if path else None
    if bottleneck is not None and weights[bottleneck] <= 0:
        bottleneck = None
    layer_of = _layer_numbers(order, parents)
    layers: list[list[int]] = [[] for _ in range(max(layer_of, default=-1) + 1)]
    for i in range(len(steps)):
        layers[layer_of[i]].append(i)
    makespan = _simulate(steps, order, children, parents, weights, cluster_slots)
    simulated = makespan is not None
    if makespan is None:
        makespan = sum(s.duration_s * s.parallelism for s in steps) / cluster_slots
    return FlowAnalysis(
        critical_path=[steps[i].node_id for i in path],
        critical_path_seconds=path_seconds,
        estimated_seconds=max(makespan, path_seconds),
        bottleneck_node=steps[bottleneck].node_id if bottleneck is not None else None,
        parallelizable_sections=_sections(steps, layers, cluster_slots),
        resource_usage=_resources(steps, average_by),
        layers=[[steps[i].node_id for i in layer] for layer in layers],
        weights={s.node_id: w for s, w in zip(steps, weights, strict=True)},
        simulated=simulated,
    )


def _index(steps: Sequence[StepEstimate]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, s in enumerate(steps):
        if s.node_id in index:
            raise ValueError(f"steps[{i}].node_id: duplicate step {s.node_id!r}")
        if not s.duration_s >= 0 or not math.isfinite(s.duration_s):
            raise ValueError(f"steps[{i}].duration_s: expected a finite number >= 0, got {s.duration_s}")
        if s.parallelism < 1:
            raise ValueError(f"steps[{i}].parallelism: expected >= 1, got {s.parallelism}")
        index[s.node_id] = i
    return index


def _adjacency(
    index: dict[str, int], edges: Sequence[tuple[str, str]]
) -> tuple[list[list[int]], list[list[int]]]:
    n = len(index)
    children: list[list[int]] = [[] for _ in range(n)]
    parents: list[list[int]] = [[] for _ in range(n)]
    seen: set[tuple[int, int]] = set()
    for k, (a, b) in enumerate(edges):
        if a not in index or b not in index:
            raise ValueError(f"edges[{k}]: unknown step {a if a not in index else b!r}")
        pair = (index[a], index[b])
        if pair not in seen:
            seen.add(pair)
            children[pair[0]].append(pair[1])
            parents[pair[1]].append(pair[0])
    return children, parents


def _topological(n: int, children: list[list[int]], parents: list[list[int]]) -> list[int]:
    indegree = [len(p) for p in parents]
    queue = deque(i for i in range(n) if indegree[i] == 0)
    order: list[int] = []
    while queue:
        i = queue.popleft()
        order.append(i)
        for c in children[i]:
            indegree[c] -= 1
            if indegree[c] == 0:
                queue.append(c)
    if len(order) != n:
        raise ValueError("the graph has a cycle")
    return order


def _critical_path(
    order: list[int], parents: list[list[int]], weights: list[float]
) -> tuple[list[int], float]:
    if not order:
        return [], 0.0
    finish = [0.0] * len(order)
    via = [-1] * len(order)
    for i in order:
        best = -1
        for p in parents[i]:
            if best < 0 or finish[p] > finish[best] or (finish[p] == finish[best] and p < best):
                best = p
        via[i] = best
        finish[i] = weights[i] + (finish[best] if best >= 0 else 0.0)
    end = max(range(len(order)), key=lambda i: (finish[i], -i))
    path = [end]
    while via[path[-1]] >= 0:
        path.append(via[path[-1]])
    path.reverse()
    return path, finish[end]


def _layer_numbers(order: list[int], parents: list[list[int]]) -> list[int]:
    layer = [0] * len(order)
    for i in order:
        if parents[i]:
            layer[i] = 1 + max(layer[p] for p in parents[i])
    return layer


def _simulate(
    steps: Sequence[StepEstimate],
    order: list[int],
    children: list[list[int]],
    parents: list[list[int]],
    weights: list[float],
    slots: int,
) -> float | None:
    """List scheduling, heaviest remaining path first; None past MAX_EVENTS shard groups."""
    bottom = [0.0] * len(steps)
    for i in reversed(order):
        bottom[i] = weights[i] + max((bottom[c] for c in children[i]), default=0.0)
    waiting = [len(p) for p in parents]
    remaining = [s.parallelism for s in steps]
    running = [0] * len(steps)
    ready = [(-bottom[i], i) for i in range(len(steps)) if waiting[i] == 0]
    heapq.heapify(ready)
    events: list[tuple[float, int, int]] = []  # (finish time, step, shards finishing)
    now, free, budget = 0.0, slots, MAX_EVENTS
    while ready or events:
        while free and ready:
            budget -= 1
            if budget < 0:
                return None
            i = ready[0][1]
            k = min(free, remaining[i])
            heapq.heappush(events, (now + steps[i].duration_s, i, k))
            free -= k
            remaining[i] -= k
            running[i] += k
            if remaining[i] == 0:
                heapq.heappop(ready)
        now = events[0][0]
        while events and events[0][0] == now:
            _, i, k = heapq.heappop(events)
            free += k
            running[i] -= k
            if running[i] == 0 and remaining[i] == 0:
                for c in children[i]:
                    waiting[c] -= 1
                    if waiting[c] == 0:
                        heapq.heappush(ready, (-bottom[c], c))
    return now


def _sections(steps: Sequence[StepEstimate], layers: list[list[int]], slots: int) -> list[dict[str, Any]]:
    sections: list[dict[str, Any]] = []
    for layer in layers:
        cap = min(slots, sum(steps[i].parallelism for i in layer))
        if cap >= 2:
            sections.append({"nodes": [steps[i].node_id for i in layer], "maxParallelism": cap})
    return sections


def _resources(steps: Sequence[StepEstimate], average_by: str) -> dict[str, Any]:
    if not steps:
        zero = {"min": 0, "max": 0, "average": 0}
        return {"cpuCores": dict(zero), "memoryMB": dict(zero), "dataProcessedGB": 0}
    total = sum(s.duration_s for s in steps)
    if average_by == "step" or total == 0:
        w = [1.0] * len(steps)
        total = float(len(steps))
    else:
        w = [s.duration_s for s in steps]

    def summary(values: list[float]) -> dict[str, float | int]:
        average = sum(v * x for v, x in zip(values, w, strict=True)) / total
        return {"min": _num(min(values)), "max": _num(max(values)), "average": _num(average)}

    return {
        "cpuCores": summary([s.cpu_cores for s in steps]),
        "memoryMB": summary([s.memory_mb for s in steps]),
        "dataProcessedGB": _num(sum(s.data_gb for s in steps)),
    }


def _num(x: float) -> float | int:
    """Integral values as ints (the seed writes 4096, not 4096.0), others to 3 decimals."""
    r = round(x, 3)
    return int(r) if r == int(r) else r
