"""What the coordinator owes each worker: its new assignments and acknowledgements, one `Assign` a drain.

Theory of operation
-------------------
* Batching. Every assignment and acknowledgement for a worker waits here until the scheduler's next
  drain, which sends each worker one `Assign` carrying all of them: a busy coordinator sends a message
  per worker per step, not one per task.
* Acknowledgements. Every result taken in is acknowledged to its worker in the next `Assign` to it (or
  alone, once per heartbeat interval), so the worker can stop keeping it for a successor; a result that
  committed its task only once that commit is published (`joblog.py` holds those back).
* Order numbers. The Assigns to each worker are numbered this epoch (`Assign.seq`), and an assignment
  knows the number of the one that carries it: a worker's report says which it has seen, so the
  scheduler tells an assignment still on its way from one that was lost.
* This node's own worker gets its Assign in memory instead of through the broker (`take_local`).
"""

from __future__ import annotations

from collections.abc import Iterable

from swarm import topics
from swarm.core.events import Effect, Publish
from swarm.messages import Assign, Assignment, TaskRef

__all__ = ["WorkerOutbox"]


class WorkerOutbox:
    """The Assigns the coordinator `self_id` of `epoch` sends its workers."""

    def __init__(self, self_id: str, epoch: int, interval: float) -> None:
        self._self_id = self_id
        self._epoch = epoch
        self._interval = interval
        self._assignments: dict[str, list[Assignment]] = {}
        self._acks: dict[str, list[TaskRef]] = {}
        self._next_ack_flush = 0.0
        #: Assigns sent per node this epoch (`Assign.seq`).
        self._sent: dict[str, int] = {}
        self._local: Assign | None = None

    def assign(self, node: str, assignment: Assignment) -> int:
        """Send `assignment` to `node` with the next drain; the order number of the Assign carrying it."""
        self._assignments.setdefault(node, []).append(assignment)
        return self._sent.get(node, 0) + 1

    def ack(self, acks: Iterable[tuple[str, TaskRef]]) -> None:
        """Acknowledge each (worker, attempt) in the next Assign to that worker."""
        for node, ref in acks:
            self._acks.setdefault(node, []).append(ref)

    def tick(self, now: float) -> bool:
        """Once a heartbeat interval, every worker still owed acknowledgements gets an Assign with the next
        drain, even an empty one; whether this was such a time."""
        if now < self._next_ack_flush:
            return False
        self._next_ack_flush = now + self._interval
        for node in self._acks:
            self._assignments.setdefault(node, [])
        return True

    def drain(self) -> list[Effect]:
        """One Assign per worker with anything to send (but for this node's own, kept for `take_local`)."""
        effects: list[Effect] = []
        for node, batch in self._assignments.items():
            seq = self._sent[node] = self._sent.get(node, 0) + 1
            assign = Assign(tuple(batch), tuple(self._acks.pop(node, ())), seq)
            if node == self._self_id:
                self._local = assign
            else:
                effects.append(Publish(topics.inbox(node), assign, epoch=self._epoch))
        self._assignments = {}
        return effects

    def take_local(self) -> Assign | None:
        """The last drain's Assign for this node's own worker."""
        local, self._local = self._local, None
        return local
