"""The invariants of DESIGN.md section 8, checked after every simulated step, and what a violation prints.

Checked as the run goes (a violation stops it at once):

1. At most one coordinator acts per epoch: after each step of a node, the epoch it acts for must not have
   been acted for by another node.
2. Each task is committed at most once, as counted by the epoch gate: an observing client follows the
   job events exactly like `swarm submit` (`JobTracker`), and a second commit *message* of a task that
   passes the gate is a violation (a redelivered copy of the same message is not: QoS 1 duplicates).
3. No accepted job is lost across coordinator changes: when a node starts acting, every job the
   observer saw accepted and not yet finished must be in its scheduler (adopted from its replica).
4. At the end of a run, every accepted task has completed or failed with a reason.

Any exception in the core (an `InvalidTransition`, the scheduler's own double-commit assertion, a failed
`validate()`) is a violation too.

Invariants 1-3 rest on assumption A of `docs/election.md` (every subscriber receives a topic's messages,
all of them, in broker order). When a fault beyond MQTT's promises made a live node miss a message on a
topic those invariants depend on (`swarm.sim.faults` says which faults do), the design promises nothing
for them any more: from then on a breach is recorded in `outside_design` instead of raised. Invariant 4
(liveness) is always held.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarm.core.tracker import JobTracker
from swarm.messages import Commit, Envelope, JobAccepted, SubmitJob, TaskUpdate
from swarm.sim.world import SimNode, SimWorld

__all__ = ["Checker", "InvariantViolation"]

#: Topic prefixes whose loss voids invariants 1-3 (the election, the announcement, the job log).
SAFETY_TOPICS = ("election", "coord", "job/")


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
    outside_design: list[str] = field(default_factory=list)
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
        for topic in ("election", "coord", "job/+/events", "job/+/commits/+"):
            broker.subscribe(self.client_id, topic)

    # --- the submitter ------------------------------------------------------------------------------

    def submit(self, job: SubmitJob) -> None:
        """Publish the job's retained spec, as `swarm submit` does."""
        self.tracker.track(job.job_id, len(job.tasks))
        self.submitted += len(job.tasks)
        env = Envelope(1, self.world.cluster, self.client_id, 0, f"submit-{job.job_id}", job)
        self.world.broker.publish(self.client_id, f"job/{job.job_id}/spec", env, retain=True)

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
        self.finished += len(self.tracker.on_envelope(env))
        if isinstance(body, Commit) and "/commits/" in topic and self.tracker.fenced == before:
            self.checks += 1
            self._count_commits(env, body)

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

    def final_check(self) -> None:
        """Invariant 4: every accepted task completed or failed with a reason."""
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
