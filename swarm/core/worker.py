"""The worker side of a node: holds assigned attempts, runs up to `slots` at once, reports outcomes.

Theory of operation
-------------------
Assignments arrive in batches and wait in arrival order (the coordinator already ordered them by
priority); an attempt already held is ignored, a higher attempt of a held task replaces it. At most
`slots` run at once through `RunTask`; the executor answers with `TaskFinished` (`on_finished`).

Like the node's other sub-machines, the handlers (`on_*`, `report`, `hand_back`, `tick`) return nothing:
effects (`RunTask`, `CancelTask`, a `WorkerReport`) wait in an outbox and finished attempts wait beside
them. The node takes both once it has fed the worker: `drain(epoch)` returns the effects with the
finished attempts batched into one `Results` message; when this node is the coordinator, the node first
takes them with `take_results()` and hands them to its scheduler in memory, so none crosses the broker.

A result stays *unacknowledged* until the coordinator acknowledges it (in `Assign.acked`) or it is
`unacked_result_ttl` old (`tick`). `report` queues a `WorkerReport` with every attempt held and every
unacknowledged result, and drops the finished attempts still waiting, which it carries. The node reports
to every new coordinator, so that a change of coordinator neither loses finished work nor runs held work
twice, and again every `REPORT_EVERY` heartbeat intervals (`node.py`): a lost `Assign` or `Results`
message, or a previous life of this node that took attempts with it, must not leave a task running for
ever. On a clean leave, `hand_back` cancels the running attempts and turns every held one into a "lost"
result, sent with the next `drain` so that the coordinator runs it elsewhere. The epoch gate for
assignments lives in `node.py`, before this machine sees them.
"""

from __future__ import annotations

from collections import deque

from swarm import topics
from swarm.core.config import CoreConfig
from swarm.core.events import CancelTask, Effect, Publish, RunTask
from swarm.messages import Assign, Assignment, Results, TaskRef, TaskResult, WorkerReport

__all__ = ["REPORT_EVERY", "Worker"]

#: Heartbeat intervals between two reports of a worker to its coordinator.
REPORT_EVERY = 4


class Worker:
    """Attempts this node holds, and results not yet acknowledged by a commit."""

    def __init__(self, self_id: str, config: CoreConfig) -> None:
        self._self_id = self_id
        self._config = config
        self._queue: deque[Assignment] = deque()
        self.held: dict[str, Assignment] = {}
        self.running: set[tuple[str, int]] = set()
        #: Running attempts this worker was told to stop, until the executor reports them ended. A new
        #: coordinator counts attempts afresh, so one of these may have a higher number than the attempt
        #: now held for the same task.
        self._stopping: set[tuple[str, int]] = set()
        self._unacked: dict[str, tuple[TaskResult, float]] = {}
        self._outbox: list[TaskResult] = []
        #: (epoch, highest `Assign.seq`) received from that epoch's coordinator; reports name it.
        self._assigns_seen: tuple[int, int] = (0, 0)
        self._effects: list[Effect] = []
        self.metrics: dict[str, int] = {}

    def on_assign(self, assign: Assign, epoch: int) -> None:
        """Forget acknowledged results; queue new attempts (one already held, a duplicate, is ignored).
        `epoch` is the sending coordinator's."""
        seen_epoch, seen = self._assigns_seen
        self._assigns_seen = (epoch, max(seen, assign.seq) if seen_epoch == epoch else assign.seq)
        for ref in assign.acked:
            unacked = self._unacked.get(ref.task_id)
            if unacked is not None and unacked[0].attempt == ref.attempt:
                del self._unacked[ref.task_id]
        for a in assign.tasks:
            current = self.held.get(a.task_id)
            if current is not None and current.attempt >= a.attempt:
                self.metrics["duplicate_assignments"] = self.metrics.get("duplicate_assignments", 0) + 1
                continue
            if current is not None:
                self.on_cancel(current.task_id, current.attempt)
            self.held[a.task_id] = a
            self._queue.append(a)
        self._start_more()

    def on_cancel(self, task_id: str, attempt: int) -> None:
        """Stop an attempt: kill it if running, forget it if still queued."""
        a = self.held.get(task_id)
        if a is None or a.attempt != attempt:
            return
        if (task_id, attempt) in self.running:
            self._effects.append(CancelTask(task_id, attempt))
            self._stopping.add((task_id, attempt))
        self.held.pop(task_id, None)

    def on_finished(self, result: TaskResult, now: float) -> None:
        """An attempt ended: report it (unless it was superseded) and start the next one."""
        a = self.held.get(result.task_id)
        self.running.discard((result.task_id, result.attempt))
        self._stopping.discard((result.task_id, result.attempt))
        if a is not None and a.attempt == result.attempt:
            del self.held[result.task_id]
            if result.kind != "cancelled":
                self._outbox.append(result)
                self._unacked[result.task_id] = (result, now)
        self._start_more()

    def report(self, epoch: int) -> None:
        """Send everything a new coordinator needs from this worker (in place of pending results)."""
        held = tuple(TaskRef(a.task_id, a.job_id, a.attempt) for a in self.held.values())
        results = tuple(r for r, _ in self._unacked.values())
        self._outbox.clear()
        seen_epoch, seen = self._assigns_seen
        report = WorkerReport(epoch, held, results, seen if seen_epoch == epoch else 0)
        self._effects.append(Publish(topics.COORD_INBOX, report, epoch=epoch))

    def hand_back(self) -> None:
        """On a clean leave: every held attempt returns to the coordinator to run elsewhere."""
        returned = [
            TaskResult(a.task_id, a.job_id, a.attempt, "lost", error=f"node {self._self_id} left")
            for a in self.held.values()
        ]
        self._effects.extend(CancelTask(t, attempt) for t, attempt in sorted(self.running))
        self._outbox.extend(returned)
        self.held.clear()
        self._queue.clear()
        self.running.clear()
        self._stopping.clear()

    def tick(self, now: float) -> None:
        """Forget unacknowledged results too old to matter (their attempts were superseded)."""
        ttl = self._config.unacked_result_ttl
        for task_id in [t for t, (_, at) in self._unacked.items() if now - at >= ttl]:
            del self._unacked[task_id]

    def take_results(self) -> tuple[TaskResult, ...]:
        """Finished attempts not yet sent, for a coordinator on this node, which gets them in memory."""
        results, self._outbox = tuple(self._outbox), []
        return results

    def drain(self, epoch: int) -> list[Effect]:
        """Effects to carry out, with finished attempts batched into one `Results`."""
        effects = self._effects
        self._effects = []
        if self._outbox:
            effects.append(Publish(topics.COORD_INBOX, Results(tuple(self._outbox)), epoch=epoch))
            self._outbox = []
        return effects

    def _start_more(self) -> None:
        while self._queue and len(self.running) < self._config.slots:
            a = self._queue.popleft()
            if self.held.get(a.task_id) is not a:
                continue
            self.running.add((a.task_id, a.attempt))
            self._effects.append(RunTask(a))

    def validate(self) -> None:
        """Invariants: a running attempt is the one held for its task, or one being stopped; an attempt
        being stopped is running; slots are respected (stopping attempts still hold theirs)."""
        for task_id, attempt in self.running:
            held = self.held.get(task_id)
            current = held is not None and held.attempt == attempt
            assert current or (task_id, attempt) in self._stopping, (task_id, attempt)
        assert self._stopping <= self.running, sorted(self._stopping - self.running)
        assert len(self.running) <= self._config.slots, len(self.running)
