"""A workflow run as its job log tells it: task commits -> step executions and the run's final state.

Every node with an API follows each run it hears of (`RunStarted` on `wf/run/<id>`) through the run's job
log, the same retained commits a successor coordinator starts from, so every node's history database
ends with the same rows whichever node started the run or coordinated it (`RunFeed`). Step executions
are queued and written in one transaction when the node's feed of messages runs dry (`RunFeed.flush`);
each also goes to the event stream at once.

The run's state: QUEUED until a coordinator accepts it, RUNNING until its job is finished, then FAILED
when a step failed (or was cancelled) with no edge leaving it that handles failure (FAILURE or ALWAYS),
CANCELLED when it was cancelled, SUCCESS otherwise: skipped steps and handled failures do not fail a run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from swarm import topics
from swarm.api.backend import Json
from swarm.api.definitions import ParsedDefinitions
from swarm.api.events import EventHub
from swarm.api.history import History
from swarm.messages import RunStarted, Started, TaskUpdate
from swarm.workflow.model import DagDefinition
from swarm.workflow.mrstep import part_of

__all__ = ["FollowedRun", "RunFeed", "final_run_state", "node_row", "owner_step", "step_of"]

log = logging.getLogger(__name__)

_HANDLES_FAILURE = ("FAILURE", "ALWAYS")


def step_of(definition: DagDefinition, run_id: str, task_id: str) -> tuple[str, int]:
    """The step (node id) and shard a task of the run is. The map and reduce tasks of a MAPREDUCE step
    `wc` are parts of it recorded as their own rows, `wc.map` and `wc.reduce` with the task's index as
    the shard; the step's own row is its collecting task's."""
    local = task_id.removeprefix(f"{run_id}.")
    if definition.has_node(local):
        return local, 0
    node_id, _, shard = local.rpartition(".")
    if definition.has_node(node_id) and shard.isdigit():
        return node_id, int(shard)
    part = part_of(local)
    if part is not None and definition.has_node(part[0]):
        return f"{part[0]}.{part[1]}", part[2]
    return local, 0


def owner_step(definition: DagDefinition, run_id: str, task_id: str) -> str:
    """The step a task of the run belongs to (a MAPREDUCE step's maps and reduces belong to it)."""
    local = task_id.removeprefix(f"{run_id}.")
    part = part_of(local)
    if part is not None and definition.has_node(part[0]) and not definition.has_node(local):
        return part[0]
    return step_of(definition, run_id, task_id)[0]


def node_row(definition: DagDefinition, run_id: str, update: TaskUpdate) -> dict[str, Any]:
    """One step execution for the history store, from a task's final commit."""
    node_id, shard = step_of(definition, run_id, update.task_id)
    result: dict[str, Any] = update.result if isinstance(update.result, dict) else {}
    raw_usage = result.get("usage")
    usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
    outputs = result.get("outputs", update.result)
    return {
        "run_id": run_id,
        "node_id": node_id,
        "shard": shard,
        "state": update.state,
        "attempt": update.attempt,
        "device": update.node,
        "started_at": update.started_at,
        "finished_at": update.finished_at,
        "error": update.error,
        "cpu_s": float(usage.get("cpuS", 0.0)),
        "peak_memory_mb": float(usage.get("peakMemoryMB", 0.0)),
        "output_size": int(usage.get("outputBytes", 0)),
        "bytes_in": int(usage.get("bytesIn", 0)),
        "bytes_out": int(usage.get("bytesOut", 0)),
        "output": outputs,
        "log_tail": str(result.get("log", "")),
    }


def final_run_state(definition: DagDefinition, states: Mapping[str, str], cancelled: bool) -> str:
    """SUCCESS, FAILED or CANCELLED from the final states of the run's steps (see the module doc)."""
    if cancelled:
        return "CANCELLED"
    for node_id, state in states.items():
        if state not in ("failed", "cancelled") or not definition.has_node(node_id):
            # A part of a MAPREDUCE step (its maps, its reduces) fails the step, which says the rest.
            continue
        handled = any(
            edge.condition.split()[0].upper() in _HANDLES_FAILURE for edge in definition.children(node_id)
        )
        if not handled:
            return "FAILED"
    return "SUCCESS"


class Subscriber(Protocol):
    """What the feed needs of its node: to follow a run's job topics."""

    async def subscribe(self, *topics: str) -> None:
        """Start receiving topics."""
        ...


@dataclass(slots=True)
class FollowedRun:
    """A run this node follows until its job ends."""

    definition: DagDefinition
    started: RunStarted
    states: dict[str, str]
    cancelled: bool = False
    #: Whether the history already shows the run RUNNING.
    running: bool = False
    #: The capability token of the run's data (known where the run was started: added steps share it).
    data_token: str = ""


class RunFeed:
    """The runs this node follows, from `RunStarted` to their job's end, into the history and the stream."""

    def __init__(
        self,
        node: Subscriber,
        history: History,
        events: EventHub,
        clock: Callable[[], float],
        run_alerts: Callable[[str, str], Awaitable[list[Json]]],
        definitions: ParsedDefinitions,
    ) -> None:
        self._node = node
        self._history = history
        self._events = events
        self._clock = clock
        # Duration anomalies of a finished run (dag id, run id) against its DAG's history.
        self._run_alerts = run_alerts
        self._definitions = definitions
        self.runs: dict[str, FollowedRun] = {}
        self._pending_rows: list[Json] = []
        self._pending_runs: list[tuple[RunStarted, float | None]] = []

    async def follow(self, started: RunStarted) -> None:
        """Record a run QUEUED and follow its job log (nothing when it is followed already)."""
        if started.run_id in self.runs:
            return
        record = await asyncio.to_thread(self._history.definition, started.dag_id, started.version)
        if record is None:
            log.warning("run %s of unknown DAG %s@%s", started.run_id, started.dag_id, started.version)
            return
        definition = self._definitions.of(record)
        self.runs[started.run_id] = FollowedRun(definition, started, {})
        await asyncio.to_thread(
            self._history.put_run,
            started.run_id,
            started.dag_id,
            started.version,
            "QUEUED",
            started.at,
            trigger=started.trigger,
            params=started.params,
            submitted_by=started.submitted_by,
        )
        run = started.run_id
        await self._node.subscribe(topics.job_commits(run), topics.job_events(run), topics.job_state(run))
        self._events.emit({"type": "run", "runId": run, "dagId": started.dag_id, "state": "QUEUED"})

    def on_commits(self, run_id: str, updates: tuple[Any, ...]) -> None:
        """Final states of the run's tasks, as committed."""
        run = self.runs[run_id]
        rows = [node_row(run.definition, run_id, u) for u in updates]
        for row in rows:
            run.states[row["node_id"]] = row["state"]
            if row["error"] == "cancelled by request":
                run.cancelled = True
        self._record(run, rows)

    def on_started(self, run_id: str, started: tuple[Started, ...]) -> None:
        """Steps the coordinator just started: RUNNING in the history (a final state later replaces it,
        never the other way round) and on the stream."""
        run = self.runs[run_id]
        now = self._clock()
        rows = []
        for attempt in started:
            node_id, shard = step_of(run.definition, run_id, attempt.task_id)
            rows.append(
                {
                    "run_id": run_id,
                    "node_id": node_id,
                    "shard": shard,
                    "state": "running",
                    "attempt": attempt.attempt,
                    "device": attempt.node,
                    "started_at": now,
                    "finished_at": 0.0,
                    "error": None,
                }
            )
        self._record(run, rows)

    def _record(self, run: FollowedRun, rows: list[Json]) -> None:
        """Queue step executions for the history (`flush` writes them) and tell the stream now."""
        run_id = run.started.run_id
        self._pending_rows.extend(rows)
        if not run.running:
            run.running = True
            started = min((r["started_at"] for r in rows if r["started_at"]), default=None)
            self._pending_runs.append((run.started, started))
        for row in rows:
            self._events.emit(
                {
                    "type": "node",
                    "runId": run_id,
                    "nodeId": row["node_id"],
                    "shard": row["shard"],
                    "state": row["state"],
                    "device": row["device"],
                    "error": row["error"],
                }
            )

    async def flush(self) -> None:
        """Write the queued step executions in one transaction. The host calls this whenever its feed
        of messages runs dry, so under load many commit records share one write; every read of the
        history flushes first."""
        rows, runs = self._pending_rows, self._pending_runs
        if not rows and not runs:
            return
        self._pending_rows, self._pending_runs = [], []
        await asyncio.to_thread(self._write_pending, rows, runs)

    def _write_pending(self, rows: list[Json], runs: list[tuple[RunStarted, float | None]]) -> None:
        for started, first_step in runs:
            self._history.put_run(
                started.run_id, started.dag_id, started.version, "RUNNING", started.at, started_at=first_step
            )
        self._history.put_nodes(rows)

    async def on_job_finished(self, run_id: str) -> None:
        """The run's job is over: its state follows from its steps' final states."""
        run = self.runs[run_id]
        await self.finish(run_id, final_run_state(run.definition, run.states, run.cancelled), None)

    async def finish(self, run_id: str, state: str, reason: str | None) -> None:
        """Record the run's end, tell the stream, and raise its duration alerts."""
        await self.flush()
        run = self.runs.pop(run_id)
        started = run.started
        await asyncio.to_thread(
            self._history.put_run,
            run_id,
            started.dag_id,
            started.version,
            state,
            started.at,
            finished_at=self._clock(),
        )
        if reason:
            await asyncio.to_thread(self._history.add_log, run_id, "", self._clock(), "ERROR", reason)
        self._events.emit(
            {"type": "run", "runId": run_id, "dagId": started.dag_id, "state": state, "reason": reason}
        )
        if self._events.listened:
            # Alerts are events only (the analytics endpoint computes them on demand): with no stream
            # client here, reading the DAG's history for them would be work for nobody.
            for alert in await self._run_alerts(started.dag_id, run_id):
                self._events.emit({"type": "alert", **alert})
