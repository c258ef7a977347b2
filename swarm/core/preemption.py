"""Preemption: where an urgent task starts at once when no member has room, and whose attempt it ends.

Theory of operation
-------------------
A ready task whose requirements allow it to `preempt` goes to a qualifying member with a free execution
slot (fewer attempts held than slots) when there is one; otherwise it cancels one attempt of strictly
lower priority (larger number) whose task is `preemptible`, on a member where that frees an execution
slot (it holds no prefetched attempts beyond its slots: the worker's queue is first in, first out, so
evicting one of many would not start the urgent task), and takes its place; otherwise it is placed like
any task. The victim is requeued at once and its attempt does not count against its retries (the attempt
number still grows, so its late result is dropped as stale). Bounded: at most one attempt is preempted
per placement, a few urgent tasks are considered per dispatch (`most_urgent`), and the attempt that
follows a preemption cannot itself be preempted, so two tasks never take turns evicting each other.

This module only chooses, from what the scheduler hands it; the scheduler cancels, requeues and assigns.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping

from swarm.core.config import PlacementWeights
from swarm.core.jobs import ReadyEntry, TaskRecord
from swarm.core.placement import Candidate, choose, pinned, unmet

__all__ = ["PREEMPT_LOOKAHEAD", "Preemption", "most_urgent"]

#: How many of the most urgent ready tasks a dispatch considers for preemption when no member has room.
PREEMPT_LOOKAHEAD = 8


def most_urgent(ready: list[ReadyEntry]) -> list[ReadyEntry]:
    """The `PREEMPT_LOOKAHEAD` most urgent entries of the ready heap, most urgent first."""
    # The k smallest entries of a binary heap sit in its first 2**k - 1 places (each has fewer than
    # k smaller ancestors), so the look stays cheap however many tasks wait.
    window = ready[: 2**PREEMPT_LOOKAHEAD - 1]
    return heapq.nsmallest(PREEMPT_LOOKAHEAD, window)


class Preemption:
    """The choice of a member, and of a victim there, for an urgent task; and the attempts that follow a
    preemption, which may not be preempted themselves."""

    def __init__(self, weights: PlacementWeights) -> None:
        self._weights = weights
        #: Task -> its attempt that may not be preempted (the one after a preemption).
        self._protected: dict[str, int] = {}

    def place(
        self,
        urgent: TaskRecord,
        avoid: Mapping[str, str] | None,
        candidates: list[Candidate],
        held: Mapping[str, Collection[str]],
        tasks: Mapping[str, TaskRecord],
        exclusive: Mapping[str, int],
    ) -> tuple[Candidate, TaskRecord | None] | None:
        """Where `urgent` starts at once: a qualifying member with a free execution slot (no victim), or
        else the member of the attempt it takes the place of, with that attempt's task; None when neither
        is possible. `held` gives the tasks each member holds, `exclusive` how many of them want their
        device to themselves."""
        req = urgent.spec.requirements
        qualified = [
            c for c in pinned(req, candidates, avoid) if unmet(req, c.node_id, c.heartbeat, avoid) is None
        ]
        # Attempts beyond a member's slots wait in its queue (first in, first out): only a member that
        # holds fewer attempts than it has slots starts this one now.
        idle = [c for c in qualified if c.held + c.reserved < c.heartbeat.slots]
        target = choose(req, idle, self._weights, avoid)
        if target is not None:
            return target, None
        best: tuple[tuple[int, float, str], TaskRecord, Candidate] | None = None
        for c in qualified:
            for task_id in held.get(c.node_id, ()):
                victim = tasks[task_id]
                if not self._allows(victim, urgent, c, exclusive.get(c.node_id, 0)):
                    continue
                # Lowest priority first, then the newest attempt (the least work lost), then the id.
                key = (-victim.spec.priority, -victim.assigned_at, task_id)
                if best is None or key < best[0]:
                    best = (key, victim, c)
        if best is None:
            return None
        _, victim, target = best
        return target, victim

    def preempted(self, victim: TaskRecord) -> None:
        """`victim`'s attempt was cancelled for an urgent task: its next attempt may not be preempted."""
        self._protected[victim.task_id] = victim.attempt + 1

    def forget(self, task_id: str) -> None:
        """The task's job closed."""
        self._protected.pop(task_id, None)

    def _allows(self, victim: TaskRecord, urgent: TaskRecord, c: Candidate, exclusive: int) -> bool:
        """Whether cancelling `victim`'s attempt on `c` is allowed and frees room there for `urgent`."""
        if (
            victim.state != "running"
            or victim.spec.priority <= urgent.spec.priority
            or not victim.spec.requirements.preemptible
            or self._protected.get(victim.task_id) == victim.attempt
        ):
            return False
        held_after = c.held - 1
        exclusive_after = exclusive - (1 if victim.spec.requirements.exclusive else 0)
        # One victim must free an execution slot: a member with prefetched attempts queued is no target.
        if exclusive_after > 0 or held_after + c.reserved >= min(c.limit, c.heartbeat.slots):
            return False
        return not (urgent.spec.requirements.exclusive and held_after > 0)
