"""The node's side of the HTTP API (`ApiBackend`): definitions, artifacts, runs, history and devices.

It holds no protocol logic of its own. A definition is parsed, checked and analysed by the pure code of
`swarm.workflow`, stored in this node's history database and published (retained, signed) on
`wf/dag/<id>/<version>`, which every other node's service stores too. An artifact's bytes stay on the
node that took them, in its artifact store inside its data-plane directory; its record on
`wf/artifact/<name>/<version>` tells peers where to fetch it. A run is a job of the task engine
(`swarm.workflow.compile`): the service publishes `RunStarted` and the job's spec, and every service
follows the run's job log into its history (`swarm.api.runs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, cast

from swarm import topics
from swarm.api.auth import ApiUser
from swarm.api.backend import Conflict, Forbidden, Json, NotFound
from swarm.api.history import History
from swarm.api.members import IDLE_S, MemberTable
from swarm.api.runs import final_run_state, node_row, step_of
from swarm.errors import InvalidSpec
from swarm.messages import (
    Amend,
    ArtifactPublished,
    Body,
    Cancel,
    Commit,
    DagDefined,
    Envelope,
    Heartbeat,
    JobRejected,
    JobState,
    NodeGone,
    RunStarted,
    StandardDefined,
    Started,
    SubmitJob,
    TasksStarted,
)
from swarm.runtime.artifacts import (
    ArtifactKind,
    ArtifactMeta,
    ArtifactStore,
    artifact_id,
    parse_artifact_ref,
    version_key,
)
from swarm.trust.roles import allowed
from swarm.workflow.allocation import (
    DEFAULT_HOLD_S,
    AllocationRequest,
    allocation_response,
    apply_allocation,
    parse_allocation,
    plan_allocation,
)
from swarm.workflow.analysis import StepEstimate, analyze_flow
from swarm.workflow.compile import ArtifactRef, RunRequest, compile_run, step_task_ids
from swarm.workflow.definition_parser import parse_definition
from swarm.workflow.fields import DefinitionError
from swarm.workflow.insights import Alert, Sample, alerts, duration_stats, suggest
from swarm.workflow.model import DagDefinition, DagNode, runtime_family
from swarm.workflow.schedules import Scheduled, check_schedule, due_runs
from swarm.workflow.standards import TaskStandard, parse_standard, with_standards
from swarm.workflow.validate import ClusterView, MemberView, NodeHistory, validate

__all__ = ["NodePort", "WorkflowService"]

log = logging.getLogger(__name__)

#: The most events a slow stream client may have waiting before it is dropped.
STREAM_QUEUE = 1000
#: Seconds to let retained heartbeats arrive when the API starts following them.
MEMBERS_SETTLE_S = 0.3
#: Seconds after which a scheduled run's records that never came back from the broker are sent again.
RESEND_AFTER_S = 5.0
#: Seconds a step is assumed to take when there is no history and it names no timeout.
DEFAULT_STEP_SECONDS = 60.0
_CODE_RUNTIMES = frozenset({"PYTHON", "SHELL", "JVM"})
_KINDS = ("python", "shell", "jar")


class NodePort(Protocol):
    """What the service needs of its node."""

    node_id: str

    def publish(self, topic: str, body: Body, retain: bool = False) -> None:
        """Sign and send a message."""
        ...

    async def subscribe(self, *topics: str) -> None:
        """Start receiving topics (they reach `WorkflowService.on_message`)."""
        ...

    async def unsubscribe(self, *topics: str) -> None:
        """Stop receiving topics the service subscribed to (unless the node's core follows them too)."""
        ...

    def status(self) -> Json:
        """The node's view of the cluster."""
        ...

    def acting(self) -> bool:
        """Whether this node acts as the coordinator (it then starts the scheduled runs)."""
        ...

    def clear(self, topic: str) -> None:
        """Delete a retained record."""
        ...


@dataclass(slots=True)
class _Allocation:
    """An allocation this node's API made: pinned placement for one run of `dag_id`, until `expires`."""

    dag_id: str
    version: str
    request: AllocationRequest
    members: dict[str, str]
    expires: float
    used_by: str | None = None


@dataclass(slots=True)
class _Run:
    definition: DagDefinition
    started: RunStarted
    states: dict[str, str]
    cancelled: bool = False
    #: Whether the history already shows the run RUNNING.
    running: bool = False
    #: The capability token of the run's data (known where the run was started: added steps share it).
    data_token: str = ""


class WorkflowService:
    """`ApiBackend` for one node."""

    def __init__(
        self,
        node: NodePort,
        history: History,
        store: ArtifactStore,
        artifact_source: Callable[[str], dict[str, str]],
        clock: Callable[[], float] = time.time,
        member_timeout: float = 6.0,
    ) -> None:
        self._node = node
        self._history = history
        self._clock = clock
        self._store = store
        # Where peers fetch a blob of this node's store (URL and capability token) by its SHA-256.
        self._source_of = artifact_source
        self._artifacts: dict[tuple[str, str], ArtifactPublished] = {}
        self._runs: dict[str, _Run] = {}
        self._scheduled: dict[str, Scheduled] = {}
        self._devices_seen: dict[str, tuple[Any, ...]] = {}
        self._pending_rows: list[Json] = []
        self._pending_runs: list[tuple[RunStarted, float | None]] = []
        self._members = MemberTable(member_timeout)
        #: When the API last needed every member (None: it does not follow their heartbeats now).
        self._members_used: float | None = None
        #: Scheduled runs sent but not yet heard back from the broker: (record, job, when sent).
        self._unconfirmed: dict[str, tuple[RunStarted, SubmitJob, float]] = {}
        self._last_fired: dict[str, float] = {}
        self._streams: set[asyncio.Queue[Json | None]] = set()
        self._allocations: dict[str, _Allocation] = {}

    # --- the cluster's records ----------------------------------------------------------------------

    def wants(self, topic: str) -> bool:
        """Whether a message on `topic` is for this service."""
        if topic.startswith(topics.WORKFLOW_PREFIX):
            return True
        if self._members_used is not None and topics.heartbeat_owner(topic) is not None:
            return True
        job = topics.job_of(topic)
        return job is not None and job[0] in self._runs

    async def on_message(self, topic: str, env: Envelope) -> None:
        """A verified message on one of the service's topics."""
        body = env.body
        try:
            match body:
                case Heartbeat() | NodeGone():
                    self._members.on_envelope(env, self._clock())
                case DagDefined():
                    await asyncio.to_thread(self._store_definition, body)
                case StandardDefined():
                    parse_standard(body.standard)
                    await asyncio.to_thread(self._store_standard, body)
                case ArtifactPublished():
                    meta = ArtifactMeta.from_json(body.meta)
                    self._artifacts[(meta.name, meta.version)] = body
                case RunStarted():
                    # A slot counts as fired once its record came back from the broker, not when it was
                    # sent: a record lost on the way is sent again (`fire_due`).
                    if body.slot is not None:
                        self._fired(body.dag_id, body.slot)
                        self._unconfirmed.pop(body.run_id, None)
                    await self._follow(body)
                case Commit(job_id, updates) if job_id in self._runs:
                    self._record_commits(job_id, updates)
                case TasksStarted(job_id, started) if job_id in self._runs:
                    self._record_started(job_id, started)
                case JobRejected(job_id, reason) if job_id in self._runs:
                    await self._finish(job_id, "FAILED", reason)
                case JobState(job_id, _, finished) if finished and job_id in self._runs:
                    run = self._runs[job_id]
                    state = final_run_state(run.definition, run.states, run.cancelled)
                    await self._finish(job_id, state, None)
                case _:
                    pass
        except (InvalidSpec, ValueError) as exc:
            log.warning("ignored a workflow record on %s from %s: %s", topic, env.sender, exc)

    def _store_definition(self, body: DagDefined) -> None:
        self._remember_schedule(body)
        self._history.put_definition(
            body.dag_id,
            body.version,
            body.definition,
            body.created_at,
            body.created_by,
            body.valid,
            name=str(body.definition.get("name", "")),
            description=str(body.definition.get("description", "")),
        )

    def _remember_schedule(self, body: DagDefined) -> None:
        """The newest valid version of a DAG decides its schedule."""
        known = self._scheduled.get(body.dag_id)
        if not body.valid or (known is not None and version_key(known.version) >= version_key(body.version)):
            return
        schedule = parse_definition(body.definition).schedule
        if schedule.type == "MANUAL":
            self._scheduled.pop(body.dag_id, None)
            return
        self._scheduled[body.dag_id] = Scheduled(
            body.dag_id, body.version, schedule, body.created_at, body.created_by, body.role
        )

    async def fire_due(self) -> list[str]:
        """Start every scheduled run that is due (the acting coordinator's node calls this every second);
        the run ids started."""
        started = []
        now = self._clock()
        for due in due_runs(self._scheduled.values(), self._last_fired, now):
            item = due.scheduled
            pending = self._unconfirmed.get(due.run_id)
            if pending is not None:
                # Fired, but its record has not come back from the broker: it may have been lost (a
                # broker restart, a one-way partition). Send the same records again, same run id.
                if now - pending[2] >= RESEND_AFTER_S:
                    self._node.publish(topics.workflow_run(due.run_id), pending[0], retain=True)
                    self._node.publish(topics.job_spec(due.run_id), pending[1], retain=True)
                    self._unconfirmed[due.run_id] = (pending[0], pending[1], now)
                continue
            owner = ApiUser(item.owner, "user", item.role)
            body = {"runId": due.run_id, "version": item.version}
            try:
                await self.start_run(item.dag_id, body, owner, trigger="schedule", slot=due.slot)
            except (InvalidSpec, Forbidden) as exc:
                # It would fail the same way every second: this slot is given up, said once.
                log.warning("scheduled run %s not started: %s", due.run_id, exc)
                self._fired(item.dag_id, due.slot)
                continue
            started.append(due.run_id)
        return started

    async def apply_retention(self) -> list[str]:
        """Forget runs older than their DAG's `dataRetentionPolicy` (KEEP_N_DAYS) here; the acting
        coordinator's node also deletes their retained records, so no new node learns them again."""
        keep: dict[str, int] = {}
        for dag in await asyncio.to_thread(self._history.dags):
            record = await asyncio.to_thread(self._history.definition, dag["dagId"], None)
            days = parse_definition(record["definition"]).retention_days if record else None
            if days is not None:
                keep[dag["dagId"]] = days
        gone = await asyncio.to_thread(self._history.prune, self._clock(), keep)
        if self._node.acting():
            for run_id in gone:
                self._node.clear(topics.workflow_run(run_id))
        return gone

    def _fired(self, dag_id: str, slot: float) -> None:
        self._last_fired[dag_id] = max(slot, self._last_fired.get(dag_id, slot))

    async def _follow(self, started: RunStarted) -> None:
        if started.run_id in self._runs:
            return
        record = await asyncio.to_thread(self._history.definition, started.dag_id, started.version)
        if record is None:
            log.warning("run %s of unknown DAG %s@%s", started.run_id, started.dag_id, started.version)
            return
        definition = parse_definition(record["definition"])
        self._runs[started.run_id] = _Run(definition, started, {})
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
        self._emit({"type": "run", "runId": run, "dagId": started.dag_id, "state": "QUEUED"})

    def _record_commits(self, run_id: str, updates: tuple[Any, ...]) -> None:
        run = self._runs[run_id]
        rows = [node_row(run.definition, run_id, u) for u in updates]
        for row in rows:
            run.states[row["node_id"]] = row["state"]
            if row["error"] == "cancelled by request":
                run.cancelled = True
        self._record(run, rows)

    def _record_started(self, run_id: str, started: tuple[Started, ...]) -> None:
        """Steps the coordinator just started: RUNNING in the history (a final state later replaces it,
        never the other way round) and on the stream."""
        run = self._runs[run_id]
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

    def _record(self, run: _Run, rows: list[Json]) -> None:
        """Queue step executions for the history (`flush` writes them) and tell the stream now."""
        run_id = run.started.run_id
        self._pending_rows.extend(rows)
        if not run.running:
            run.running = True
            started = min((r["started_at"] for r in rows if r["started_at"]), default=None)
            self._pending_runs.append((run.started, started))
        for row in rows:
            self._emit(
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

    async def _finish(self, run_id: str, state: str, reason: str | None) -> None:
        await self.flush()
        run = self._runs.pop(run_id)
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
        self._emit(
            {"type": "run", "runId": run_id, "dagId": started.dag_id, "state": state, "reason": reason}
        )
        # Duration anomalies of this run against the DAG's history, for whoever watches.
        samples = _samples(await asyncio.to_thread(self._history.samples, started.dag_id))
        for alert in alerts(samples):
            if alert.run_id == run_id:
                self._emit({"type": "alert", **_alert_json(alert)})

    # --- definitions --------------------------------------------------------------------------------

    async def define_dag(self, body: Json, user: ApiUser) -> Json:
        """Parse, check, analyse and publish a definition version."""
        definition = parse_definition(body)
        existing = await asyncio.to_thread(self._history.definition, definition.dag_id, definition.version)
        if existing is not None and existing["definition"] != definition.to_json():
            raise Conflict(
                f"{definition.dag_id} version {definition.version} exists with another body; versions are"
                " immutable: define a new version",
                path="version",
            )
        history = await self._node_history(definition.dag_id)
        await self.need_members()
        result = validate(definition, await self._standards(), self._cluster_view(), history)
        now = self._clock()
        if result.is_valid:
            check_schedule(definition.schedule)
        record = DagDefined(
            definition.dag_id,
            definition.version,
            definition.to_json(),
            now,
            user.id,
            result.is_valid,
            user.role,
        )
        self._node.publish(topics.workflow_dag(definition.dag_id, definition.version), record, retain=True)
        await asyncio.to_thread(self._store_definition, record)
        response: Json = {
            "dagId": definition.dag_id,
            "version": definition.version,
            "status": "CREATED" if result.is_valid else "INVALID",
            "createdAt": _iso(now),
            "createdBy": user.id,
            "validationResults": result.to_json(),
            "notApplied": [{"path": n.path, "reason": n.reason} for n in definition.not_applied],
        }
        if _acyclic(definition):
            analysis = analyze_flow(self._estimates(definition), _edges(definition), self._slots()).to_json()
            response["estimatedExecutionTime"] = analysis["estimatedExecutionTime"]
            response["estimatedResourceUsage"] = analysis["estimatedResourceUsage"]
            response["dataFlowAnalysis"] = {
                key: analysis[key]
                for key in ("bottleneckNode", "criticalPath", "parallelizableSections", "layers")
            }
        return {
            **response,
            "visualizationUrl": f"/dag/visualize/{definition.dag_id}",
            "nextSteps": ["START_RUN", "SCHEDULE_DEPLOYMENT", "SET_UP_MONITORING"]
            if result.is_valid
            else ["FIX_ERRORS"],
        }

    def _estimates(self, definition: DagDefinition) -> list[StepEstimate]:
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

    async def _node_history(self, dag_id: str) -> dict[str, NodeHistory]:
        samples = await asyncio.to_thread(self._history.samples, dag_id)
        stats = duration_stats(_samples(samples))
        return {node: NodeHistory(s.count, s.success_rate, s.mean, s.p95) for node, s in stats.items()}

    def _cluster_view(self) -> ClusterView:
        views = []
        for m in self._members.members(self._clock()):
            hb = m.heartbeat
            if hb is None or m.state != "alive":
                continue
            c = hb.caps
            views.append(
                MemberView(
                    m.node_id,
                    hb.name,
                    c.cores,
                    c.memory_mb,
                    c.disk_free_gb,
                    c.gpu,
                    frozenset(c.runtimes),
                    {},
                    hb.slots,
                )
            )
        return ClusterView(tuple(views))

    def _slots(self) -> int:
        return max(1, sum(m.slots for m in self._cluster_view().members))

    async def list_dags(self) -> list[Json]:
        """Every DAG with its latest version and last run."""
        return await asyncio.to_thread(self._history.dags)

    async def get_dag(self, dag_id: str, version: str | None) -> Json | None:
        """One version (the latest when None)."""
        return await asyncio.to_thread(self._history.definition, dag_id, version)

    async def dag_versions(self, dag_id: str) -> list[Json]:
        """Every version of a DAG."""
        return await asyncio.to_thread(self._history.versions, dag_id)

    # --- runs ---------------------------------------------------------------------------------------

    async def start_run(
        self, dag_id: str, body: Json, user: ApiUser, trigger: str = "manual", slot: float | None = None
    ) -> Json:
        """Compile the definition into a job and submit it, on behalf of `user`. A run id given again is
        the same run: it is answered, never started twice. With an `allocationId` (see `allocate`), the
        allocation's version and executionId are the defaults and its placements are applied."""
        allocation = self._allocation_for(body.get("allocationId"), dag_id)
        if allocation is not None:
            defaults = {"version": allocation.version, "runId": allocation.request.execution_id}
            body = {**{k: v for k, v in defaults.items() if v}, **body}
        if body.get("runId"):
            known = await self.get_run(str(body["runId"]))
            if known is not None:
                return {**known, "existing": True}
        record = await asyncio.to_thread(self._history.definition, dag_id, body.get("version"))
        if record is None:
            raise NotFound(
                f"no DAG {dag_id!r}" + (f" version {body['version']}" if body.get("version") else "")
            )
        if not record["valid"]:
            raise InvalidSpec(f"{dag_id} version {record['version']} did not pass its contract check")
        definition = with_standards(parse_definition(record["definition"]), await self._standards())
        runtimes = {runtime_family(n.task.runtime) for n in definition.nodes}
        if runtimes & _CODE_RUNTIMES and not allowed(user.role, "run_code"):
            raise Forbidden(
                f"{dag_id} runs code ({', '.join(sorted(runtimes & _CODE_RUNTIMES))}); role {user.role!r}"
                " lacks the run_code permission (an operator's)"
            )
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise DefinitionError("params", "expected an object of input names to values")
        now = self._clock()
        run_id = body.get("runId") or f"{dag_id}@{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-" + (
            secrets.token_hex(2)
        )
        token = secrets.token_urlsafe(24)
        request = RunRequest(str(run_id), params, user.id, user.role, user.team, trigger, token)
        job = compile_run(definition, request, self._resolve)
        if allocation is not None:
            if allocation.used_by not in (None, job.job_id):
                raise Conflict(f"allocation {body['allocationId']} was used by run {allocation.used_by}")
            job = apply_allocation(job, definition, allocation.request, allocation.members)
            allocation.used_by = job.job_id
        started = RunStarted(job.job_id, dag_id, definition.version, params, trigger, user.id, now, slot)
        self._node.publish(topics.workflow_run(job.job_id), started, retain=True)
        # Follow the run before its job exists: the coordinator's `TasksStarted` is not retained, and a
        # subscription made after the spec went out missed it on a busy node (no step ever RUNNING).
        await self._follow(started)
        self._node.publish(topics.job_spec(job.job_id), job, retain=True)
        if slot is not None:
            self._unconfirmed[job.job_id] = (started, job, now)
        if job.job_id in self._runs:
            self._runs[job.job_id].data_token = token
        return {
            "runId": job.job_id,
            "dagId": dag_id,
            "version": definition.version,
            "state": "QUEUED",
            "tasks": len(job.tasks),
        }

    def _resolve(self, ref: str) -> ArtifactRef:
        name, version = parse_artifact_ref(ref)
        candidates = [v for (n, v) in self._artifacts if n == name and (version is None or v == version)]
        if not candidates:
            raise DefinitionError("taskDefinition.artifactId", f"no artifact {ref!r} in the cluster")
        best = max(candidates, key=version_key)
        record = self._artifacts[(name, best)]
        return ArtifactRef(dict(record.meta), tuple(record.sources))

    async def get_run(self, run_id: str) -> Json | None:
        """A run with its step executions."""
        await self.flush()
        return await asyncio.to_thread(self._history.run, run_id)

    async def list_runs(self, dag_id: str | None, limit: int, state: str | None) -> list[Json]:
        """The newest runs."""
        await self.flush()
        return await asyncio.to_thread(self._history.runs, dag_id, limit, state)

    async def cancel_run(self, run_id: str, user: ApiUser) -> Json:
        """Ask the coordinator to cancel every unfinished task of the run."""
        run = await self.get_run(run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r}")
        if run.get("submittedBy") not in ("", user.id) and not allowed(user.role, "cancel_any"):
            raise Forbidden(f"{user.id} may not cancel run {run_id} of {run.get('submittedBy')}")
        self._node.publish(topics.COORD_INBOX, Cancel(run_id, self._node.node_id, "member"))
        return {**run, "cancelRequested": True}

    async def modify_run(self, run_id: str, body: Json, user: ApiUser) -> Json:
        """Change a running run: `{"skip": [nodeId, ...], "add": {"nodes": [...], "edges": [...]}}`.
        Skipped steps must not have started; added steps are seed-shaped nodes, and added edges may only
        lead into added steps (a started step's inputs cannot change). The coordinator applies it, or
        refuses it (logged) when a step started meanwhile."""
        run = self._runs.get(run_id)
        if run is None:
            raise Conflict(f"run {run_id!r} is not running here (finished, or unknown to this node)")
        if run.started.submitted_by not in ("", user.id) and not allowed(user.role, "cancel_any"):
            raise Forbidden(f"{user.id} may not change run {run_id} of {run.started.submitted_by}")
        definition = run.definition
        skip: list[str] = []
        for i, node_id in enumerate(body.get("skip") or ()):
            if not definition.has_node(node_id):
                raise NotFound(f"run {run_id} has no step {node_id!r}", path=f"skip[{i}]")
            if node_id in run.states:
                raise Conflict(f"step {node_id} already ended ({run.states[node_id]})", path=f"skip[{i}]")
            skip.extend(step_task_ids(run_id, definition.node(node_id)))
        added, amended = await self._added_steps(run, body.get("add") or {}, user)
        job = SubmitJob(run_id, (), submitted_by=user.id, role=user.role)
        if added:
            token = run.data_token or secrets.token_urlsafe(24)
            request = RunRequest(run_id, {}, user.id, user.role, user.team, "amend", token)
            new = {n.node_id for n in added}
            tasks = compile_run(amended, request, self._resolve).tasks
            job = replace(job, tasks=tuple(t for t in tasks if step_of(amended, run_id, t.task_id)[0] in new))
            run.definition = amended
        self._node.publish(topics.COORD_INBOX, Amend(run_id, tuple(skip), job.tasks, user.id, user.role))
        return {
            "runId": run_id,
            "skipRequested": sorted(body.get("skip") or ()),
            "added": sorted(n.node_id for n in added),
        }

    async def _added_steps(self, run: _Run, add: Json, user: ApiUser) -> tuple[list[DagNode], DagDefinition]:
        """The steps `add` defines, and the run's definition with them, checked like a definition."""
        nodes, edges = add.get("nodes") or [], add.get("edges") or []
        if not nodes:
            if edges:
                raise DefinitionError("add.edges", "edges may only lead into added steps")
            return [], run.definition
        merged = run.definition.to_json()
        merged["nodes"] = [*merged["nodes"], *nodes]
        merged["edges"] = [*merged.get("edges", []), *edges]
        amended = parse_definition(merged)
        new = {str(n.get("nodeId")) for n in nodes if isinstance(n, dict)}
        for i, edge in enumerate(amended.edges[len(run.definition.edges) :]):
            if edge.target not in new:
                raise DefinitionError(f"add.edges[{i}].to", "edges may only lead into added steps")
        await self.need_members()
        result = validate(amended, await self._standards(), self._cluster_view(), None)
        if not result.is_valid:
            first = result.errors[0]
            raise DefinitionError(f"add.nodes[{first.node_id}]", first.message)
        added = [amended.node(node_id) for node_id in sorted(new)]
        families = {runtime_family(n.task.runtime) for n in added}
        if families & _CODE_RUNTIMES and not allowed(user.role, "run_code"):
            raise Forbidden(f"the added steps run code; role {user.role!r} lacks the run_code permission")
        return added, amended

    async def allocate(self, body: Json, user: ApiUser) -> Json:
        """Seed 004's allocation: choose a live member for each step named (`swarm.workflow.allocation`,
        whose docstring says what it holds: pinned placement for a run started with its id before it
        expires, not reserved capacity). Kept on this node only: start the run through this node's API."""
        request = parse_allocation(body)
        await self.need_members()
        if request.preemption_allowed and not allowed(user.role, "cancel_any"):
            # Preempting stops other people's running attempts, as cancelling them would.
            raise Forbidden(
                f"priorityConfig.preemptionAllowed: role {user.role!r} lacks the cancel_any permission"
                " (an operator's)"
            )
        record = await asyncio.to_thread(self._history.definition, request.dag_id, None)
        if record is None:
            raise NotFound(f"no DAG {request.dag_id!r}")
        if not record["valid"]:
            raise InvalidSpec(f"{request.dag_id} version {record['version']} did not pass its contract check")
        definition = with_standards(parse_definition(record["definition"]), await self._standards())
        now = self._clock()
        for key, old in list(self._allocations.items()):
            if old.expires <= now:
                del self._allocations[key]
        expires = request.deadline if request.deadline is not None else now + DEFAULT_HOLD_S
        if expires <= now:
            raise DefinitionError(
                "schedulingConstraints.executionDeadline", f"{_iso(expires)} is not in the future"
            )
        allocation_id = request.allocation_id or f"alloc-{secrets.token_hex(6)}"
        known = self._allocations.get(allocation_id)
        if known is not None and known.used_by is not None:
            raise Conflict(f"allocation {allocation_id} was used by run {known.used_by}", path="allocationId")
        live = [
            (m.node_id, m.heartbeat)
            for m in self._members.members(self._clock())
            if m.state == "alive" and m.heartbeat
        ]
        plan = plan_allocation(request, definition, live)
        if plan.status != "REJECTED":
            self._allocations[allocation_id] = _Allocation(
                request.dag_id, definition.version, request, plan.members(), expires
            )
        flow = analyze_flow(self._estimates(definition), _edges(definition), self._slots())
        placed = plan.status != "REJECTED"
        return allocation_response(
            allocation_id,
            request,
            plan,
            definition.version,
            _iso(now),
            _iso(expires),
            _iso(now) if placed else None,
            _iso(now + flow.estimated_seconds) if placed else None,
        )

    def _allocation_for(self, allocation_id: object, dag_id: str) -> _Allocation | None:
        """The unexpired allocation a run start names, or None when it names none."""
        if allocation_id is None:
            return None
        if not isinstance(allocation_id, str):
            raise DefinitionError("allocationId", "expected a string")
        allocation = self._allocations.get(allocation_id)
        if allocation is None or allocation.expires <= self._clock():
            raise NotFound(
                f"no allocation {allocation_id!r} on this node (allocations are kept by the node that made"
                " them, until they expire)"
            )
        if allocation.dag_id != dag_id:
            raise Conflict(f"allocation {allocation_id} is for DAG {allocation.dag_id}, not {dag_id}")
        return allocation

    async def history(self, dag_id: str, limit: int) -> Json:
        """The newest runs of a DAG with their step executions."""
        runs = await asyncio.to_thread(self._history.runs, dag_id, limit, None)
        detailed = [await self.get_run(r["runId"]) for r in runs]
        return {"dagId": dag_id, "runs": [r for r in detailed if r is not None]}

    async def analytics(self, dag_id: str) -> Json:
        """Per-step statistics and suggestions from measured history."""
        await self.need_members()
        record = await asyncio.to_thread(self._history.definition, dag_id, None)
        if record is None:
            raise NotFound(f"no DAG {dag_id!r}")
        definition = parse_definition(record["definition"])
        samples = _samples(await asyncio.to_thread(self._history.samples, dag_id))
        stats = duration_stats(samples)
        estimates = [
            StepEstimate(
                e.node_id,
                stats[e.node_id].mean if e.node_id in stats else e.duration_s,
                e.parallelism,
                e.cpu_cores,
                e.memory_mb,
            )
            for e in self._estimates(definition)
        ]
        edges = _edges(definition)
        flow = analyze_flow(estimates, edges, self._slots())
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
            "suggestions": [s.to_json() for s in suggest(estimates, edges, stats, self._slots())],
            "alerts": [_alert_json(a) for a in alerts(samples)],
        }

    # --- artifacts ----------------------------------------------------------------------------------

    async def push_artifact(
        self, name: str, version: str, kind: str, filename: str, data: bytes, user: ApiUser
    ) -> Json:
        """Keep the bytes here and tell the cluster where to fetch them."""
        if kind not in _KINDS:
            raise InvalidSpec(f"kind: expected one of {', '.join(_KINDS)}, got {kind!r}")
        now = self._clock()
        put = self._store.put
        meta = await asyncio.to_thread(
            put, name, version, cast(ArtifactKind, kind), filename, data, now, user.id
        )
        self.announce(meta)
        return {**meta.to_json(), "artifactId": artifact_id(name, version)}

    def announce(self, meta: ArtifactMeta) -> None:
        """Tell the cluster that this node serves `meta` (again after a restart: its port may differ)."""
        record = ArtifactPublished(meta.to_json(), (self._source_of(meta.sha256),))
        self._artifacts[(meta.name, meta.version)] = record
        self._node.publish(topics.workflow_artifact(meta.name, meta.version), record, retain=True)

    def announce_all(self) -> None:
        """Announce every artifact this node holds (on every connection: a new broker knows none)."""
        for meta in self._store.list():
            self.announce(meta)

    async def list_artifacts(self) -> list[Json]:
        """Every artifact the cluster knows, newest version first per name."""
        metas = [ArtifactMeta.from_json(r.meta) for r in self._artifacts.values()]
        metas.sort(key=lambda m: (m.name, version_key(m.version)), reverse=True)
        return [{**m.to_json(), "artifactId": m.artifact_id} for m in metas]

    async def get_artifact(self, name: str, version: str | None) -> Json | None:
        """One version's metadata, or every version's."""
        found = [a for a in await self.list_artifacts() if a["name"] == name]
        if version is None:
            return {"name": name, "versions": found} if found else None
        return next((a for a in found if a["version"] == version), None)

    async def artifact_source(self, name: str, version: str) -> tuple[str, bytes] | None:
        """The bytes of an artifact this node holds (the code viewer reads them)."""
        meta = self._store.get(name, version)
        if meta is None:
            return None
        return meta.filename, await asyncio.to_thread(self._store.blob_path(meta.sha256).read_bytes)

    async def list_standards(self) -> list[Json]:
        """Every task standard version."""
        return await asyncio.to_thread(self._history.standards)

    async def define_standard(self, body: Json, user: ApiUser) -> Json:
        """Store a task standard version and publish it; versions are immutable."""
        standard = parse_standard(body)
        known = await self._standards()
        if standard.key in known and known[standard.key].to_json() != standard.to_json():
            raise Conflict(
                f"standard {standard.key} exists with another body; define a new version", "version"
            )
        record = StandardDefined(standard.name, standard.version, standard.to_json(), self._clock(), user.id)
        self._node.publish(topics.workflow_standard(standard.name, standard.version), record, retain=True)
        await asyncio.to_thread(self._store_standard, record)
        return {**standard.to_json(), "key": standard.key}

    def _store_standard(self, body: StandardDefined) -> None:
        self._history.put_standard(body.name, body.version, body.standard, body.created_at, body.created_by)

    async def _standards(self) -> dict[str, TaskStandard]:
        rows = await asyncio.to_thread(self._history.standards)
        parsed = (parse_standard(row["standard"]) for row in rows)
        return {s.key: s for s in parsed}

    # --- devices and the stream ---------------------------------------------------------------------

    async def need_members(self) -> None:
        """Follow every member's heartbeat from now on, if not already (see `swarm.api.members`): on the
        first call the retained heartbeats arrive within a broker round trip, waited for here."""
        first = self._members_used is None
        self._members_used = self._clock()
        if first:
            await self._node.subscribe(topics.EVERY_HEARTBEAT)
            await asyncio.sleep(MEMBERS_SETTLE_S)

    async def forget_members_if_idle(self) -> None:
        """Stop following heartbeats after `IDLE_S` without a request that needs them or a stream."""
        used = self._members_used
        if used is not None and not self._streams and self._clock() - used > IDLE_S:
            self._members_used = None
            await self._node.unsubscribe(topics.EVERY_HEARTBEAT)

    async def devices(self) -> list[Json]:
        """Every member with its state, capabilities and load."""
        await self.need_members()
        return self._device_entries()

    def watch_devices(self) -> None:
        """Emit a `device` event for every member whose state, work or load changed since the last call
        (the host calls this every second; heartbeats bring the changes)."""
        if not self._streams:
            return
        seen: dict[str, tuple[Any, ...]] = {}
        for entry in self._device_entries():
            key = (entry["state"], entry.get("running"), round(entry.get("load", 0.0), 2))
            seen[entry["nodeId"]] = key
            if self._devices_seen.get(entry["nodeId"]) != key:
                self._emit({"type": "device", **entry})
        for gone in set(self._devices_seen) - set(seen):
            self._emit({"type": "device", "nodeId": gone, "state": "forgotten"})
        self._devices_seen = seen

    def _device_entries(self) -> list[Json]:
        out = []
        for m in self._members.members(self._clock()):
            hb = m.heartbeat
            entry: Json = {"nodeId": m.node_id, "state": m.state}
            if hb is not None:
                c = hb.caps
                entry.update(
                    name=hb.name,
                    slots=hb.slots,
                    running=hb.running,
                    load=hb.load,
                    freeMemoryMB=hb.free_memory_mb,
                    cores=c.cores,
                    memoryMB=c.memory_mb,
                    diskFreeGB=c.disk_free_gb,
                    platform=c.platform,
                    arch=c.arch,
                    gpu=c.gpu,
                    batteryPercent=c.battery_percent,
                    charging=c.charging,
                    isolation=c.isolation,
                    runtimes=list(c.runtimes),
                    hostname=c.hostname,
                )
            out.append(entry)
        return out

    def status(self) -> Json:
        """The node's view of the cluster."""
        return self._node.status()

    async def subscribe(self) -> AsyncIterator[Json]:
        """Run and step events as they happen; a client that falls `STREAM_QUEUE` behind is dropped."""
        queue: asyncio.Queue[Json | None] = asyncio.Queue(STREAM_QUEUE)
        self._streams.add(queue)
        await self.need_members()
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._streams.discard(queue)

    def _emit(self, event: Json) -> None:
        for queue in list(self._streams):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._streams.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(None)


def _alert_json(alert: Alert) -> Json:
    return {
        "runId": alert.run_id,
        "nodeId": alert.node_id,
        "kind": alert.kind,
        "durationS": round(alert.duration_s, 3),
        "expectedS": round(alert.expected_s, 3),
        "deviation": round(alert.deviation, 3),
        "message": alert.message,
    }


def _acyclic(definition: DagDefinition) -> bool:
    try:
        definition.topological_order()
    except DefinitionError:
        return False
    return True


def _edges(definition: DagDefinition) -> list[tuple[str, str]]:
    return [(e.source, e.target) for e in definition.edges]


def _samples(rows: list[Json]) -> list[Sample]:
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


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
