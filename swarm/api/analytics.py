"""History and analytics queries of a DAG, and the flow estimates the define and allocate answers carry.

The numbers come from the pure code of `swarm.workflow` (`analysis.analyze_flow`, `insights`); this module
feeds it from the history database: each step lasts its measured mean when there is history, else a
quarter of its timeout, else `DEFAULT_STEP_SECONDS` (a stated guess, not a measurement).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from swarm.api.backend import Json, NotFound
from swarm.api.definitions import ParsedDefinitions
from swarm.api.devices import DeviceWatch
from swarm.api.history import History
from swarm.workflow.analysis import StepEstimate, analyze_flow
from swarm.workflow.fields import DefinitionError
from swarm.workflow.insights import Alert, Sample, alerts, duration_stats, suggest
from swarm.workflow.model import DagDefinition
from swarm.workflow.validate import NodeHistory

__all__ = [
    "DEFAULT_STEP_SECONDS",
    "Analytics",
    "acyclic",
    "alert_json",
    "estimates",
    "flow_edges",
    "samples_of",
]

#: Seconds a step is assumed to take when there is no history and it names no timeout.
DEFAULT_STEP_SECONDS = 60.0


class Analytics:
    """A DAG's history and the analysis of it."""

    def __init__(
        self,
        history: History,
        devices: DeviceWatch,
        get_run: Callable[[str], Awaitable[Json | None]],
        definitions: ParsedDefinitions,
    ) -> None:
        self._history = history
        self._definitions = definitions
        self._devices = devices
        self._get_run = get_run

    async def history(self, dag_id: str, limit: int) -> Json:
        """The newest runs of a DAG with their step executions."""
        runs = await asyncio.to_thread(self._history.runs, dag_id, limit, None)
        detailed = [await self._get_run(r["runId"]) for r in runs]
        return {"dagId": dag_id, "runs": [r for r in detailed if r is not None]}

    async def analytics(self, dag_id: str) -> Json:
        """Per-step statistics and suggestions from measured history."""
        await self._devices.need_members()
        record = await asyncio.to_thread(self._history.definition, dag_id, None)
        if record is None:
            raise NotFound(f"no DAG {dag_id!r}")
        definition = self._definitions.of(record)
        samples = samples_of(await asyncio.to_thread(self._history.samples, dag_id))
        stats = duration_stats(samples)
        measured = [
            StepEstimate(
                e.node_id,
                stats[e.node_id].mean if e.node_id in stats else e.duration_s,
                e.parallelism,
                e.cpu_cores,
                e.memory_mb,
            )
            for e in estimates(definition)
        ]
        edges = flow_edges(definition)
        slots = self._devices.slots()
        flow = analyze_flow(measured, edges, slots)
        return {
            "dagId": dag_id,
            "version": definition.version,
            "samples": len(samples),
            "nodes": {
                n: {
                    "runs": s.count,
                    "meanS": s.mean,
                    "p50S": s.p50,
                    "p95S": s.p95,
                    "successRate": s.success_rate,
                    "trendSPerRun": s.trend,
                }
                for n, s in stats.items()
            },
            "dataFlowAnalysis": flow.to_json(),
            "suggestions": [s.to_json() for s in suggest(measured, edges, stats, slots)],
            "alerts": [alert_json(a) for a in alerts(samples)],
        }

    async def node_history(self, dag_id: str) -> dict[str, NodeHistory]:
        """Per step: how many runs, success rate, mean and p95 duration (the contract check's SLA input)."""
        samples = await asyncio.to_thread(self._history.samples, dag_id)
        stats = duration_stats(samples_of(samples))
        return {node: NodeHistory(s.count, s.success_rate, s.mean, s.p95) for node, s in stats.items()}

    async def run_alerts(self, dag_id: str, run_id: str) -> list[Json]:
        """Duration anomalies of one run against its DAG's history."""
        samples = samples_of(await asyncio.to_thread(self._history.samples, dag_id))
        return [alert_json(a) for a in alerts(samples) if a.run_id == run_id]


def estimates(definition: DagDefinition) -> list[StepEstimate]:
    """Each step's estimate without history: a quarter of its timeout, else `DEFAULT_STEP_SECONDS`."""
    return [
        StepEstimate(
            n.node_id,
            n.execution.timeout_s / 4 if n.execution.timeout_s else DEFAULT_STEP_SECONDS,
            n.execution.parallelism,
            n.resources.cpu_cores,
            n.resources.memory_mb,
        )
        for n in definition.nodes
    ]


def alert_json(alert: Alert) -> Json:
    """A duration alert in the API's shape."""
    return {
        "runId": alert.run_id,
        "nodeId": alert.node_id,
        "kind": alert.kind,
        "durationS": round(alert.duration_s, 3),
        "expectedS": round(alert.expected_s, 3),
        "deviation": round(alert.deviation, 3),
        "message": alert.message,
    }


def acyclic(definition: DagDefinition) -> bool:
    """Whether the definition has no cycle (only then can its flow be analysed)."""
    try:
        definition.topological_order()
    except DefinitionError:
        return False
    return True


def flow_edges(definition: DagDefinition) -> list[tuple[str, str]]:
    """The definition's edges as (source, target) pairs."""
    return [(e.source, e.target) for e in definition.edges]


def samples_of(rows: list[Json]) -> list[Sample]:
    """The history's step executions as samples for `swarm.workflow.insights`."""
    return [
        Sample(
            r["run_id"],
            r["node_id"],
            r["started_at"],
            r["duration_s"],
            bool(r["ok"]),
            r.get("cpu_s", 0.0),
            r.get("peak_memory_mb", 0.0),
            device=r.get("device") or "",
        )
        for r in rows
    ]
