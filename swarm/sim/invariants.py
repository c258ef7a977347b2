"""The invariants of DESIGN.md section 8, checked after every simulated step, and what a violation prints.

Checked as the run goes (a violation stops it at once):

1. At most one coordinator acts per epoch: after each step of a node, the epoch it acts for must not have
   been acted for by another node.
2. Each task is committed at most once, as counted by the epoch gate: an observing client follows the
   job events exactly like `swarm submit` (`JobTracker`), and a second commit *message* of a task that
   passes the gate is a violation (a redelivered copy of the same message is not: QoS 1 duplicates).
3. No accepted job is lost across coordinator changes: when a node starts acting, every job the
   observer saw accepted and not yet finished must be in its scheduler (adopted from its replica), and
   every task of it goes on from the attempts the job log says it spent (its attempt number no lower).
4. At the end of a run, every accepted task has completed or failed with a reason.
5. A MapReduce job (`swarm.sim.mapreduce`) ends with every task done, and its outputs, once the
   observer has seen it finish, are the word count of its corpus computed here apart from the engine:
   each key in the output its stable hash names, once, in sorted order, with the reference's count. At
   the end of a run, every MapReduce job has finished and been checked.

Any exception in the core (an `InvalidTransition`, the scheduler's own double-commit assertion, a failed
`validate()`) is a violation too.

Invariants 1-3 rest on assumption A of `docs/election.md` (every subscriber receives a topic's messages,
all of them, in broker order). When a fault beyond MQTT's promises made a live node miss a message on a
topic those invariants depend on (`swarm.sim.network` says which faults do), the design promises nothing
for them any more: from then on a breach is recorded in `outside_design` instead of raised. Invariants 4
(liveness) and 5 (a result must be right whatever happened on the way) are always held.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from swarm import topics
from swarm.core.tracker import JobTracker
from swarm.mapreduce.kernels import partition_of
from swarm.messages import TERMINAL_STATES, Commit, Envelope, JobAccepted, SubmitJob, TaskUpdate
from swarm.sim.mapreduce import SimJob, reference_counts
from swarm.sim.world import SimNode, SimWorld

__all__ = ["Checker", "InvariantViolation"]

#: Topic prefixes whose loss voids invariants 1-3 (the election, the announcement, the job log).
SAFETY_TOPICS = (topics.ELECTION, topics.COORD, "job/")


class InvariantViolation(AssertionError):
    """An invariant failed; the message holds the seed, a replay command and the story of what happened."""


@dataclass(slots=True)
class _Commit:
    msg_id: str
    sender: str
    epoch: int
    at: float
    update: TaskUpdate


@dataclass(slots=True)
class Checker:
    """The observing client plus the checks; attach it to a world before the run starts."""

    world: SimWorld
    replay: str
    client_id: str = "client"
    tracker: JobTracker = field(default_factory=JobTracker)
    acting: dict[int, str] = field(default_factory=dict)
    accepted_at: dict[str, float] = field(default_factory=dict)
    first_commit: dict[str, _Commit] = field(default_factory=dict)
    #: Task -> (when seen, the highest attempt the job log says it spent).
    spent: dict[str, tuple[float, int]] = field(default_factory=dict)
    outside_design: list[str] = field(default_factory=list)
    mapreduce_checked: set[str] = field(default_factory=set)
    checks: int = 0
    submitted: int = 0
    finished: int = 0

    def __post_init__(self) -> None:
        self._connect()
        self.world.after_step.append(self._after_step)
        self.world.on_core_error = self._core_error
        self.world.reconnect_hooks.append(self._connect)

    def _connect(self) -> None:
        broker = self.world.broker
        broker.connect(self.client_id, self._deliver, self.world.latency, None, clean=False)
        for topic in (topics.ELECTION, topics.COORD, topics.job_events("+"), topics.JOB_LOG):
            broker.subscribe(self.client_id, topic)

    # --- the submitter ------------------------------------------------------------------------------

    def submit(self, job: SubmitJob) -> None:
        """Publish the job's retained spec, as `swarm submit` does."""
        self.tracker.track(job.job_id, len(job.tasks))
        self.submitted += len(job.tasks)
        env = Envelope(1, self.world.cluster, self.client_id, 0, f"submit-{job.job_id}", job)
        self.world.broker.publish(self.client_id, topics.job_spec(job.job_id), env, retain=True)

    def done(self) -> int:
        """Tasks with a final state, as the submitter counts them."""
        return self.finished

    def _deliver(self, topic: str, env: Envelope | None) -> None:
        if env is None:
            return
        body = env.body
        if isinstance(body, JobAccepted):
            self.accepted_at.setdefault(body.job_id, self.world.now)
        before = self.tracker.fenced
        fresh = self.tracker.on_envelope(env)
        self.finished += len(fresh)
        if isinstance(body, Commit):
            for used in body.spent:
                if used.attempt > self.spent.get(used.task_id, (0.0, 0))[1]:
                    self.spent[used.task_id] = (self.world.now, used.attempt)
        if isinstance(body, Commit) and "/commits/" in topic and self.tracker.fenced == before:
            self.checks += 1
            self._count_commits(env, body)
        if fresh and isinstance(body, Commit) and body.job_id in self.world.mapreduce.jobs:
            self._check_mapreduce(self.world.mapreduce.jobs[body.job_id])

    def _count_commits(self, env: Envelope, body: Commit) -> None:
        for update in body.updates:
            first = self.first_commit.setdefault(
                update.task_id, _Commit(env.msg_id, env.sender, env.epoch, self.world.now, update)
            )
            # A coordinator restating a commit (adopted, or republished for a fresh broker) states the
            # same outcome; a second commit is a different one: another attempt, result or state.
            if first.msg_id != env.msg_id and first.update != update:
                self._breach(
                    f"task {update.task_id} committed twice: {first.msg_id} by {first.sender} in epoch "
                    f"{first.epoch} at {first.at:.3f}, then {env.msg_id} by {env.sender} "
                    f"in epoch {env.epoch}",
                    task_id=update.task_id,
                    nodes=[first.sender, env.sender],
                )
        job = self.tracker.jobs.get(body.job_id)
        if job is not None and job.duplicates:
            self._breach(f"conflicting commits in job {body.job_id}", nodes=[env.sender])

    # --- per-step checks ----------------------------------------------------------------------------

    def _after_step(self, node: SimNode | None) -> None:
        if node is None:
            return
        self.checks += 1
        epoch = node.machine.election.acting_epoch
        if epoch is None:
            return
        holder = self.acting.get(epoch)
        if holder is None:
            self.acting[epoch] = node.node_id
            self._check_adopted(node)
        elif holder != node.node_id:
            self._breach(
                f"epoch {epoch} has two coordinators: {holder} and {node.node_id}",
                nodes=[holder, node.node_id],
            )

    def _check_adopted(self, node: SimNode) -> None:
        """A new coordinator must hold every job accepted (well before it took over) and not finished."""
        scheduler = node.machine.scheduler
        if scheduler is None:
            return
        settled = self.world.now - self.world.config.heartbeat_interval
        for job_id, at in sorted(self.accepted_at.items()):
            progress = self.tracker.jobs.get(job_id)
            if at > settled or progress is None or progress.finished:
                continue
            if job_id not in scheduler.jobs and job_id not in node.machine.replica.finished:
                self._breach(
                    f"job {job_id}, accepted at {at:.3f}, is unknown to the new coordinator "
                    f"{node.node_id} of epoch {scheduler.epoch}",
                    nodes=[node.node_id],
                )
        for task_id, (at, attempt) in sorted(self.spent.items()):
            rec = scheduler.tasks.get(task_id)
            if rec is None or at > settled or rec.state in TERMINAL_STATES:
                continue
            if rec.attempt < attempt:
                self._breach(
                    f"task {task_id} spent attempt {attempt} by {at:.3f}, but the new coordinator "
                    f"{node.node_id} of epoch {scheduler.epoch} counts {rec.attempt}",
                    task_id=task_id,
                    nodes=[node.node_id],
                )

    def _check_mapreduce(self, job: SimJob) -> None:
        """Invariant 5, once the submitter sees the job finish: every task done, and the outputs are the
        reference word count, every key in the output its hash names, once, in sorted order."""
        progress = self.tracker.jobs.get(job.job_id)
        if progress is None or not progress.finished or job.job_id in self.mapreduce_checked:
            return
        self.mapreduce_checked.add(job.job_id)
        self.checks += 1
        for update in sorted(progress.updates.values(), key=lambda u: u.task_id):
            if update.state != "done":
                self._mapreduce_violation(
                    job, f"task {update.task_id} {update.state}: {update.error}", update
                )
        counted: dict[bytes, int] = {}
        for r in range(job.reducers):
            reduce = progress.updates[f"{job.job_id}.r{r}"]
            if r not in job.outputs:
                self._mapreduce_violation(job, f"mr-out-{r} was never written", reduce)
            keys, values = job.outputs[r]
            if len(keys) > 1 and not bool(np.all(keys[1:] > keys[:-1])):
                self._mapreduce_violation(
                    job, f"mr-out-{r} is not sorted by key or holds a key twice", reduce
                )
            parts = partition_of(keys, job.reducers)
            wrong = np.flatnonzero(parts != r)
            if len(wrong):
                key, right = keys[wrong[0]], parts[wrong[0]]
                self._mapreduce_violation(
                    job, f"mr-out-{r} holds {key!r}, whose hash puts it in mr-out-{right}", reduce
                )
            counted.update(zip(keys.tolist(), values.tolist(), strict=True))
        reference = dict(reference_counts(job.corpus))
        if counted != reference:
            differ = sorted(
                k for k in reference.keys() | counted.keys() if counted.get(k) != reference.get(k)
            )
            examples = ", ".join(
                f"{k!r} {counted.get(k, 0)} (reference {reference.get(k, 0)})" for k in differ[:3]
            )
            r = int(partition_of(np.array(differ[:1], dtype=np.bytes_), job.reducers)[0])
            self._mapreduce_violation(
                job,
                f"the outputs differ from the reference word count in {len(differ)} of {len(reference)} "
                f"words, e.g. {examples}",
                progress.updates[f"{job.job_id}.r{r}"],
            )

    def final_check(self) -> None:
        """Invariants 4 and 5: every accepted task completed or failed with a reason; every MapReduce job
        finished (and its outputs were checked then)."""
        for job_id, progress in sorted(self.tracker.jobs.items()):
            if progress.rejected is not None:
                continue
            if not progress.finished:
                missing = sorted(set(self._task_ids(job_id)) - set(progress.updates))
                example = missing[0] if missing else None
                self._violation(
                    f"job {job_id}: {progress.total - len(progress.updates)} of {progress.total} "
                    f"tasks never reached a final state (e.g. {example})",
                    task_id=example,
                )
            for update in progress.updates.values():
                if update.state != "done" and not update.error:
                    self._violation(
                        f"task {update.task_id} {update.state} without a reason", task_id=update.task_id
                    )
        for job_id in sorted(self.world.mapreduce.jobs):
            if job_id not in self.mapreduce_checked:
                rejected = self.tracker.jobs[job_id].rejected
                why = "never finished" if rejected is None else f"was rejected: {rejected}"
                self._violation(f"MapReduce job {job_id} {why}")

    def _task_ids(self, job_id: str) -> list[str]:
        for node in self.world.nodes.values():
            spec = node.machine.replica.specs.get(job_id)
            if spec is not None:
                return [t.task_id for t in spec.tasks]
        return []

    # --- reporting ----------------------------------------------------------------------------------

    def design_holds(self) -> bool:
        """Whether no live node has missed a message that invariants 1-3 depend on."""
        return not any(topic.startswith(SAFETY_TOPICS) for _, _, topic, _ in self.world.losses)

    def _breach(self, what: str, task_id: str | None = None, nodes: list[str] | None = None) -> None:
        if self.design_holds():
            self._violation(what, task_id, nodes)
        first = next(x for x in self.world.losses if x[2].startswith(SAFETY_TOPICS))
        note = f"{what} (after {first[1]} missed {first[2]} at {first[0]:.3f}: {first[3]})"
        if note not in self.outside_design[-5:]:
            self.outside_design.append(note)

    def _core_error(self, node: SimNode, event: object, exc: Exception) -> None:
        raise InvariantViolation(
            self._message(
                f"the core of {node.node_id} raised {type(exc).__name__}: {exc}", None, [node.node_id]
            )
        ) from exc

    def _violation(self, what: str, task_id: str | None = None, nodes: list[str] | None = None) -> None:
        raise InvariantViolation(self._message(what, task_id, nodes or []))

    def _mapreduce_violation(self, job: SimJob, what: str, update: TaskUpdate) -> None:
        """Invariant 5 failed: the usual story, then the task's commit and every MapReduce attempt's.

        The scheduler has forgotten the tasks of a finished job, so the attempts' story is the one
        `swarm.sim.mapreduce` kept: where each map left its runs, what each reduce fetched or recomputed.
        """
        nodes = [update.node or "", *(n.node_id for n in self.world.coordinators())]
        lines = [
            self._message(f"MapReduce job {job.job_id}: {what}", None, nodes),
            f"commit of {update.task_id}: {update.state}, attempt {update.attempt} on {update.node}, "
            f"result {update.result}",
            f"MapReduce attempts of job {job.job_id} (map: runs left; reduce: runs fetched or recomputed):",
        ]
        lines += ["  " + line for line in job.log]
        raise InvariantViolation("\n".join(lines))

    def _message(self, what: str, task_id: str | None, nodes: list[str]) -> str:
        w = self.world
        lines = [f"seed {w.seed}: {what} at t={w.now:.3f}", f"replay: {self.replay}"]
        if task_id is not None:
            lines.append(f"story of task {task_id}:")
            for n in w.nodes.values():
                sched = n.machine.scheduler
                if sched is not None and task_id in sched.tasks:
                    lines += [f"  [{n.node_id}] {line}" for line in sched.tasks[task_id].story]
            nodes = nodes + [n.node_id for n in w.nodes.values() if n.machine.scheduler is not None]
        for node_id in dict.fromkeys(nodes):
            if node_id in w.nodes:
                lines.append(f"last steps of {node_id}:")
                lines += ["  " + s for s in w.nodes[node_id].story()[-20:]]
        lines.append("faults and world events:")
        lines += ["  " + t for t in list(w.trace)[-20:]]
        return "\n".join(lines)
