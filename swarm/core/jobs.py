"""The coordinator's records of jobs and tasks, with the task lifecycle as a transition table.

A task moves `waiting` (on its predecessors) -> `queued` -> `running` -> `done` | `failed` | `cancelled`,
and back from `running` to `queued` when an attempt fails and the policy allows another; a workflow step
whose edges' conditions do not hold moves from `waiting` to `skipped`. Any other move is a bug and raises
`InvalidTransition` with the task's story.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from swarm.devices.capabilities import problems
from swarm.errors import InvalidSpec, InvalidTransition
from swarm.messages import (
    TERMINAL_STATES,
    AttemptsSpent,
    Requirements,
    SubmitJob,
    TaskRef,
    TaskSpec,
    TaskState,
    TaskSummary,
    TaskUpdate,
)
from swarm.workflow.conditions import parse_condition
from swarm.workflow.gate import step_inputs

__all__ = ["TRANSITIONS", "JobRecord", "ReadyEntry", "TaskRecord", "check_job", "piped_payload"]

#: An entry of the coordinator's ready queue, a heap: (priority, sequence number, task id).
ReadyEntry = tuple[int, int, str]

TRANSITIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("waiting", "queued"),
        ("waiting", "failed"),
        ("waiting", "cancelled"),
        ("waiting", "skipped"),
        ("queued", "running"),
        ("queued", "failed"),
        ("queued", "cancelled"),
        ("queued", "skipped"),
        ("running", "queued"),
        ("running", "done"),
        ("running", "failed"),
        ("running", "cancelled"),
    }
)

STORY_LENGTH = 32


@dataclass(slots=True)
class TaskRecord:
    """One task as the coordinator tracks it."""

    spec: TaskSpec
    job_id: str
    state: TaskState
    attempt: int = 0
    node: str | None = None
    #: While backing off: when the task may run again.
    not_before: float | None = None
    assigned_at: float = 0.0
    #: The `Assign.seq` that carries the current attempt to its node (0: adopted from a report).
    assign_seq: int = 0
    blocked_since: float | None = None
    reason: str | None = None
    waiting_on: set[str] = field(default_factory=set)
    dependents: list[str] = field(default_factory=list)
    story: deque[str] = field(default_factory=lambda: deque(maxlen=STORY_LENGTH))

    @property
    def task_id(self) -> str:
        """The task's id."""
        return self.spec.task_id

    def move(self, new: TaskState, now: float, why: str) -> None:
        """Change state through the transition table, recording why."""
        if (self.state, new) not in TRANSITIONS:
            raise InvalidTransition(f"task {self.task_id}", self.state, new, list(self.story))
        self.story.append(f"{now:.3f} {self.state}->{new} attempt={self.attempt} node={self.node}: {why}")
        self.state = new

    def summary(self) -> TaskSummary:
        """The task as `swarm tasks` shows it."""
        return TaskSummary(
            task_id=self.task_id,
            job_id=self.job_id,
            type=self.spec.type,
            state=self.state,
            attempt=self.attempt,
            priority=self.spec.priority,
            node=self.node,
            reason=self.reason,
        )


@dataclass(slots=True)
class JobRecord:
    """A job: its tasks, what has been committed, and what is still to publish."""

    spec: SubmitJob
    tasks: dict[str, TaskRecord]
    committed: dict[str, TaskUpdate] = field(default_factory=dict)
    unpublished: list[TaskUpdate] = field(default_factory=list)
    #: Attempts spent by tasks to be tried again, not yet in the job log (the newest per task).
    unpublished_spent: dict[str, AttemptsSpent] = field(default_factory=dict)
    batches: int = 0
    published_at: float = float("-inf")
    #: Results whose commits are not yet published: (worker, attempt) acknowledged once they are.
    unpublished_acks: list[tuple[str, TaskRef]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Every task has a committed final state."""
        return len(self.committed) == len(self.tasks)

    def commit(self, update: TaskUpdate) -> bool:
        """Record a final state once; a second commit of the same task is refused (returns False)."""
        if update.task_id in self.committed:
            return False
        assert update.state in TERMINAL_STATES, update
        self.committed[update.task_id] = update
        self.unpublished.append(update)
        return True


def check_job(job: SubmitJob) -> None:
    """Raise `InvalidSpec` if the job's shape is wrong: no tasks, duplicate ids, unknown or cyclic deps."""
    if not job.job_id:
        raise InvalidSpec("job has no id")
    if job.job_id.startswith("_"):
        raise InvalidSpec(
            f"job id {job.job_id!r}: ids starting with '_' are reserved for the node's own data"
        )
    if not job.tasks:
        raise InvalidSpec(f"job {job.job_id} has no tasks")
    ids: dict[str, TaskSpec] = {}
    # Tasks of a job mostly share their requirements: each distinct set is range-checked once, which
    # keeps a takeover that re-checks every adopted job short.
    in_range: set[Requirements] = set()
    for task in job.tasks:
        if task.task_id in ids:
            raise InvalidSpec(f"duplicate task id {task.task_id!r}")
        ids[task.task_id] = task
        _check_task(task, in_range)
    for task in job.tasks:
        for dep in task.after:
            if dep not in ids:
                raise InvalidSpec(f"task {task.task_id!r} depends on unknown task {dep!r}")
        _check_inflows(task)
    _check_acyclic(ids)


def _check_task(task: TaskSpec, in_range: set[Requirements]) -> None:
    if not task.task_id or not task.type:
        raise InvalidSpec("every task needs a task_id and a type")
    if not 0 <= task.priority <= 4:
        raise InvalidSpec(f"task {task.task_id!r}: priority must be 0 (urgent) .. 4 (background)")
    if task.timeout is not None and task.timeout <= 0:
        raise InvalidSpec(f"task {task.task_id!r}: timeout must be positive")
    if task.retry.max_retries < 0 or task.retry.base < 0 or task.retry.cap < 0:
        raise InvalidSpec(f"task {task.task_id!r}: retry settings must not be negative")
    if not 0 <= task.retry.jitter <= 1:
        raise InvalidSpec(f"task {task.task_id!r}: jitter must lie in [0, 1]")
    if not 1 <= task.retry.multiplier <= 10:
        raise InvalidSpec(f"task {task.task_id!r}: the backoff multiplier must lie in [1, 10]")
    if task.requirements in in_range:
        return
    out_of_range = next(problems(task.requirements), None)
    if out_of_range is not None:
        name, problem = out_of_range
        raise InvalidSpec(f"task {task.task_id!r}: requirement {name} {problem}")
    in_range.add(task.requirements)


def _check_inflows(task: TaskSpec) -> None:
    """A step's edges name exactly its predecessors, and their conditions parse."""
    if not task.inflows:
        return
    sources = [source for flow in task.inflows for source in flow.sources]
    if sorted(sources) != sorted(task.after):
        raise InvalidSpec(f"task {task.task_id!r}: its inflows must name exactly the tasks it comes after")
    if task.pipe:
        raise InvalidSpec(f"task {task.task_id!r}: a workflow step takes inputs, not a piped result")
    for flow in task.inflows:
        parse_condition(flow.condition)


def _check_acyclic(tasks: dict[str, TaskSpec]) -> None:
    indegree = {tid: len(spec.after) for tid, spec in tasks.items()}
    dependents: dict[str, list[str]] = {tid: [] for tid in tasks}
    for tid, spec in tasks.items():
        for dep in spec.after:
            dependents[dep].append(tid)
    ready = [tid for tid, n in indegree.items() if n == 0]
    seen = 0
    while ready:
        tid = ready.pop()
        seen += 1
        for nxt in dependents[tid]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    if seen != len(tasks):
        cyclic = sorted(tid for tid, n in indegree.items() if n > 0)
        raise InvalidSpec(f"tasks form a cycle: {', '.join(cyclic[:10])}")


def piped_payload(spec: TaskSpec, committed: dict[str, TaskUpdate]) -> dict[str, Any]:
    """The payload a task runs with: its own, plus its predecessors' results when it pipes them, or the
    inputs its edges map from them when it is a workflow step."""
    if spec.inflows:
        return step_inputs(spec, committed)
    if not spec.pipe or not spec.after:
        return spec.payload
    results = [committed[dep].result for dep in spec.after]
    return {**spec.payload, "previous": results[0] if len(results) == 1 else results}
