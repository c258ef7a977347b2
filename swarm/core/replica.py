"""A member's copy of the durable job log: specs, commits and final states as the broker delivered them.

All members follow `job/+/state`; the coordinator, its standbys and would-be claimants also follow
`job/+/spec` and `job/+/commits/+` (see `node.py`).

Commit records pass no epoch gate here: a claimant reads most of them as retained records when it
subscribes, after it may already have seen higher claims, so their epochs say nothing about whether
observers counted them. Instead, of the records for one task, the one of the highest epoch stands. Every
record describes an attempt that really finished; a coordinator adopts what its replica holds and
publishes it again under its own epoch, so observers, whose gates dropped a record of a deposed
coordinator, count the task exactly once then (`docs/election.md`). The simulator found why the gate
cannot stay: a claimant that read a retained record of epoch 2 after seeing claims 3 and 4 dropped it,
and ran the task again.

The same records carry the attempts that tasks not yet final have spent; of those, the highest attempt
stands, so a successor numbers the next attempt after it and counts the retries already used.

A finished job's spec stays retained with its commits, and is cleared with them when they expire, its
final state last (`expired`, `on_state_cleared`). The clear is an empty message, which carries no epoch:
a deposed coordinator that had not heard of its successor and closed the job on its own (its attempts
refused by every worker) once cleared the spec that way, and the successor, still electing, never
adopted the job. The final state is a signed record of its epoch, which the gate in `node.py` fences;
a replica drops a finished job's spec on that record, and forgets the job's id only when the state
record is gone (else a claimant that had forgotten the id would adopt the spec, were its clear lost). A
spec is cleared early only when nobody accepted the job: refused, or withdrawn by its submitter.
"""

from __future__ import annotations

from swarm import topics
from swarm.messages import AttemptsSpent, SubmitJob, TaskUpdate

__all__ = ["ActiveJob", "Replica"]

#: An unfinished job as a successor adopts it: its spec, its commits by task, and its spent attempts.
ActiveJob = tuple[SubmitJob, dict[str, TaskUpdate], dict[str, AttemptsSpent]]


class Replica:
    """Jobs known to be accepted but not finished, what of them is committed or spent, and recently
    finished ids."""

    def __init__(self) -> None:
        self.specs: dict[str, SubmitJob] = {}
        self.committed: dict[str, dict[str, tuple[int, TaskUpdate]]] = {}
        self.spent: dict[str, dict[str, AttemptsSpent]] = {}
        self.records: dict[str, set[str]] = {}
        self.finished: dict[str, tuple[float, set[str]]] = {}
        #: Finished jobs whose records this node, as coordinator, already asked the broker to clear.
        self._clearing: set[str] = set()

    def on_spec(self, job: SubmitJob) -> None:
        """Remember a submission, unless its job already finished (a late resend: `finished` says so)."""
        if job.job_id not in self.finished:
            self.specs[job.job_id] = job

    def on_spec_cleared(self, job_id: str) -> None:
        """The spec was deleted: the job was refused or withdrawn, or its records expired."""
        self.specs.pop(job_id, None)

    def on_commits(
        self,
        job_id: str,
        updates: tuple[TaskUpdate, ...],
        spent: tuple[AttemptsSpent, ...],
        topic: str,
        epoch: int,
    ) -> None:
        """Count a retained batch of commits (at `topic`, of `epoch`); per task, the highest epoch stands
        (the first of equal ones). Of the attempts spent, the highest stands."""
        if job_id in self.finished:
            self.finished[job_id][1].add(topic)
            return
        self.records.setdefault(job_id, set()).add(topic)
        table = self.committed.setdefault(job_id, {})
        for update in updates:
            known = table.get(update.task_id)
            if known is None or known[0] < epoch:
                table[update.task_id] = (epoch, update)
        attempts = self.spent.setdefault(job_id, {})
        for used in spent:
            before = attempts.get(used.task_id)
            if before is None or before.attempt < used.attempt:
                attempts[used.task_id] = used

    def forget_log(self) -> None:
        """This member stops following the job log: what it holds of it would only go stale."""
        self.specs.clear()
        self.committed.clear()
        self.spent.clear()
        self.records.clear()

    def on_finished(self, job_id: str, now: float) -> None:
        """The job's final record was published; its commit records are kept until they expire."""
        if job_id not in self.finished:
            self.finished[job_id] = (now, self.records.pop(job_id, set()) | {topics.job_spec(job_id)})
        self.specs.pop(job_id, None)
        self.committed.pop(job_id, None)
        self.spent.pop(job_id, None)

    def finished_since(self, since: float) -> list[str]:
        """Jobs whose end we learned at or after `since`, in id order."""
        return sorted(j for j, (at, _) in self.finished.items() if at >= since)

    def active(self) -> list[ActiveJob]:
        """Unfinished jobs with their commits and the attempts their other tasks spent, in id order."""
        return [
            (
                self.specs[j],
                {t: u for t, (_, u) in self.committed.get(j, {}).items()},
                dict(self.spent.get(j, {})),
            )
            for j in sorted(self.specs)
        ]

    def expired(self, now: float, retention: float) -> list[tuple[str, list[str]]]:
        """Finished jobs older than `retention`, each once, with the topics of their spec and commit
        records: the coordinator clears those, then the job's state record (`on_state_cleared`)."""
        old = [
            (j, sorted(topics))
            for j, (at, topics) in self.finished.items()
            if now - at >= retention and j not in self._clearing
        ]
        self._clearing.update(j for j, _ in old)
        return old

    def on_state_cleared(self, job_id: str) -> None:
        """The job's final state record is gone from the broker: its spec and commits went before it."""
        self.finished.pop(job_id, None)
        self._clearing.discard(job_id)
