"""The node's side of the HTTP API (`ApiBackend`): DAG definitions and runs, over the parts it is made of.

It holds no protocol logic of its own. A definition is parsed, checked and analysed by the pure code of
`swarm.workflow`, stored in this node's history database and published (retained, signed) on
`wf/dag/<id>/<version>`, which every other node's service stores too. A run is a job of the task engine
(`swarm.workflow.compile`): the service publishes `RunStarted` and the job's spec, and every service
follows the run's job log into its history.

The parts, each with one job: `catalog` (artifacts and task standards), `members` (the members, the
device list and events), `feed` (followed runs into the history and the stream, `swarm.api.runs`),
`schedules` (scheduled runs), `allocations` (seed 004's allocations), `reports` (history queries and
their analysis), and `events` (the stream's fan-out). This class routes the cluster's records to them
and answers the API, forwarding what one part answers alone.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace
from typing import Protocol

from swarm import topics
from swarm.api.allocations import Allocations
from swarm.api.analytics import Analytics, acyclic, estimates, flow_edges
from swarm.api.auth import ApiUser
from swarm.api.backend import Conflict, Forbidden, Json, NotFound, iso_time
from swarm.api.catalog import Catalog
from swarm.api.definitions import ParsedDefinitions
from swarm.api.devices import DeviceWatch
from swarm.api.events import EventHub
from swarm.api.history import History
from swarm.api.runs import FollowedRun, RunFeed, owner_step
from swarm.api.scheduled import ScheduledRuns
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
    SubmitJob,
    TasksStarted,
)
from swarm.runtime.artifacts import ArtifactStore
from swarm.trust.roles import allowed
from swarm.workflow.analysis import analyze_flow
from swarm.workflow.compile import RunRequest, compile_run, step_task_ids
from swarm.workflow.definition_parser import parse_definition
from swarm.workflow.fields import DefinitionError
from swarm.workflow.model import DagDefinition, DagNode
from swarm.workflow.schedules import check_schedule
from swarm.workflow.standards import parse_standard, with_standards
from swarm.workflow.validate import validate

__all__ = ["NodePort", "WorkflowService"]

log = logging.getLogger(__name__)

_CODE_RUNTIMES = frozenset({"PYTHON", "SHELL", "JVM", "MAPREDUCE"})


def _code_runtimes(nodes: Iterable[DagNode]) -> set[str]:
    """The runtimes of `nodes` that run their user's code (a MAPREDUCE step does with an app artifact,
    not with a built-in app)."""
    return {
        n.task.family
        for n in nodes
        if n.task.family in _CODE_RUNTIMES and (n.task.family != "MAPREDUCE" or n.task.artifact_id)
    }


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
        self.events = EventHub()
        self.definitions = ParsedDefinitions()
        self.members = DeviceWatch(node, self.events, clock, member_timeout)
        self.catalog = Catalog(node, history, store, artifact_source, clock)
        self.reports = Analytics(history, self.members, self.get_run, self.definitions)
        self.feed = RunFeed(node, history, self.events, clock, self.reports.run_alerts, self.definitions)
        self.schedules = ScheduledRuns(node, self.start_run, clock)
        self.allocations = Allocations(
            node, history, self.members, self.catalog.standards, clock, self.definitions
        )

    # --- the cluster's records ----------------------------------------------------------------------

    def wants(self, topic: str) -> bool:
        """Whether a message on `topic` is for this service."""
        if topic.startswith(topics.WORKFLOW_PREFIX):
            return True
        if self.members.following and topics.heartbeat_owner(topic) is not None:
            return True
        job = topics.job_of(topic)
        return job is not None and job[0] in self.feed.runs

    async def on_message(self, topic: str, env: Envelope) -> None:
        """A verified message on one of the service's topics."""
        body = env.body
        runs = self.feed.runs
        try:
            match body:
                case Heartbeat() | NodeGone():
                    self.members.on_envelope(env)
                case DagDefined():
                    await asyncio.to_thread(self._store_definition, body)
                case StandardDefined():
                    parse_standard(body.standard)
                    await asyncio.to_thread(self.catalog.store_standard, body)
                case ArtifactPublished():
                    self.catalog.on_published(body)
                case RunStarted():
                    self.schedules.on_run_started(body)
                    await self.feed.follow(body)
                case Commit(job_id, updates) if job_id in runs:
                    self.feed.on_commits(job_id, updates)
                case TasksStarted(job_id, started) if job_id in runs:
                    self.feed.on_started(job_id, started)
                case JobRejected(job_id, reason) if job_id in runs:
                    await self.feed.finish(job_id, "FAILED", reason)
                case JobState(job_id, _, finished) if finished and job_id in runs:
                    await self.feed.on_job_finished(job_id)
                case _:
                    pass
        except (InvalidSpec, ValueError) as exc:
            log.warning("ignored a workflow record on %s from %s: %s", topic, env.sender, exc)

    def _store_definition(self, body: DagDefined) -> None:
        self.schedules.on_defined(body)
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

    async def apply_retention(self) -> list[str]:
        """Forget runs older than their DAG's `dataRetentionPolicy` (KEEP_N_DAYS) here; the acting
        coordinator's node also deletes their retained records, so no new node learns them again."""
        keep: dict[str, int] = {}
        for dag in await asyncio.to_thread(self._history.dags):
            record = await asyncio.to_thread(self._history.definition, dag["dagId"], None)
            days = self.definitions.of(record).retention_days if record else None
            if days is not None:
                keep[dag["dagId"]] = days
        gone = await asyncio.to_thread(self._history.prune, self._clock(), keep)
        if self._node.acting():
            for run_id in gone:
                self._node.clear(topics.workflow_run(run_id))
        return gone

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
        history = await self.reports.node_history(definition.dag_id)
        await self.members.need_members()
        result = validate(
            definition,
            await self.catalog.standards(),
            self.members.cluster_view(),
            history,
            self.catalog.artifact_meta,
        )
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
        self.definitions.keep(definition, now, user.id)
        response: Json = {
            "dagId": definition.dag_id,
            "version": definition.version,
            "status": "CREATED" if result.is_valid else "INVALID",
            "createdAt": iso_time(now),
            "createdBy": user.id,
            "validationResults": result.to_json(),
            "notApplied": [{"path": n.path, "reason": n.reason} for n in definition.not_applied],
        }
        if acyclic(definition):
            flow = analyze_flow(estimates(definition), flow_edges(definition), self.members.slots())
            analysis = flow.to_json()
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
        allocation = self.allocations.named(body.get("allocationId"), dag_id)
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
        definition = with_standards(self.definitions.of(record), await self.catalog.standards())
        runtimes = _code_runtimes(definition.nodes)
        if runtimes and not allowed(user.role, "run_code"):
            raise Forbidden(
                f"{dag_id} runs code ({', '.join(sorted(runtimes))}); role {user.role!r}"
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
        job = compile_run(definition, request, self.catalog.resolve)
        if allocation is not None:
            job = self.allocations.apply(allocation, body["allocationId"], job, definition)
        started = RunStarted(job.job_id, dag_id, definition.version, params, trigger, user.id, now, slot)
        self._node.publish(topics.workflow_run(job.job_id), started, retain=True)
        # Follow the run before its job exists: the coordinator's `TasksStarted` is not retained, and a
        # subscription made after the spec went out missed it on a busy node (no step ever RUNNING).
        await self.feed.follow(started)
        self._node.publish(topics.job_spec(job.job_id), job, retain=True)
        if slot is not None:
            self.schedules.sent(started, job, now)
        if job.job_id in self.feed.runs:
            self.feed.runs[job.job_id].data_token = token
        return {
            "runId": job.job_id,
            "dagId": dag_id,
            "version": definition.version,
            "state": "QUEUED",
            "tasks": len(job.tasks),
        }

    async def get_run(self, run_id: str) -> Json | None:
        """A run with its step executions."""
        await self.feed.flush()
        return await asyncio.to_thread(self._history.run, run_id)

    async def list_runs(self, dag_id: str | None, limit: int, state: str | None) -> list[Json]:
        """The newest runs."""
        await self.feed.flush()
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
        run = self.feed.runs.get(run_id)
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
            skip.extend(step_task_ids(run_id, definition.node(node_id), definition))
        added, amended = await self._added_steps(run, body.get("add") or {}, user)
        job = SubmitJob(run_id, (), submitted_by=user.id, role=user.role)
        if added:
            token = run.data_token or secrets.token_urlsafe(24)
            request = RunRequest(run_id, {}, user.id, user.role, user.team, "amend", token)
            new = {n.node_id for n in added}
            tasks = compile_run(amended, request, self.catalog.resolve).tasks
            job = replace(job, tasks=tuple(t for t in tasks if owner_step(amended, run_id, t.task_id) in new))
            run.definition = amended
        self._node.publish(topics.COORD_INBOX, Amend(run_id, tuple(skip), job.tasks, user.id, user.role))
        return {
            "runId": run_id,
            "skipRequested": sorted(body.get("skip") or ()),
            "added": sorted(n.node_id for n in added),
        }

    async def _added_steps(
        self, run: FollowedRun, add: Json, user: ApiUser
    ) -> tuple[list[DagNode], DagDefinition]:
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
        await self.members.need_members()
        result = validate(
            amended,
            await self.catalog.standards(),
            self.members.cluster_view(),
            None,
            self.catalog.artifact_meta,
        )
        if not result.is_valid:
            first = result.errors[0]
            raise DefinitionError(f"add.nodes[{first.node_id}]", first.message)
        added = [amended.node(node_id) for node_id in sorted(new)]
        if _code_runtimes(added) and not allowed(user.role, "run_code"):
            raise Forbidden(f"the added steps run code; role {user.role!r} lacks the run_code permission")
        return added, amended

    # --- what one part answers alone -----------------------------------------------------------------

    async def allocate(self, body: Json, user: ApiUser) -> Json:
        """Seed 004's allocation (`swarm.api.allocations`)."""
        return await self.allocations.allocate(body, user)

    async def history(self, dag_id: str, limit: int) -> Json:
        """The newest runs of a DAG with their step executions."""
        return await self.reports.history(dag_id, limit)

    async def analytics(self, dag_id: str) -> Json:
        """Per-step statistics and suggestions from measured history."""
        return await self.reports.analytics(dag_id)

    async def push_artifact(
        self, name: str, version: str, kind: str, filename: str, data: bytes, user: ApiUser
    ) -> Json:
        """Keep an artifact's bytes here and tell the cluster where to fetch them."""
        return await self.catalog.push_artifact(name, version, kind, filename, data, user)

    async def list_artifacts(self) -> list[Json]:
        """Every artifact the cluster knows, newest version first per name."""
        return await self.catalog.list_artifacts()

    async def get_artifact(self, name: str, version: str | None) -> Json | None:
        """One version's metadata, or every version's."""
        return await self.catalog.get_artifact(name, version)

    async def artifact_source(self, name: str, version: str) -> tuple[str, bytes] | None:
        """The bytes of an artifact this node holds."""
        return await self.catalog.artifact_source(name, version)

    async def list_standards(self) -> list[Json]:
        """Every task standard version."""
        return await self.catalog.list_standards()

    async def define_standard(self, body: Json, user: ApiUser) -> Json:
        """Store a task standard version and publish it."""
        return await self.catalog.define_standard(body, user)

    async def devices(self) -> list[Json]:
        """Every member with its state, capabilities and load."""
        return await self.members.devices()

    def status(self) -> Json:
        """The node's view of the cluster."""
        return self._node.status()

    def subscribe(self) -> AsyncIterator[Json]:
        """Run, step and device events as they happen (following every member meanwhile)."""
        return self.events.subscribe(self.members.need_members)
