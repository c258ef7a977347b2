"""Every member's copy of the durable job log: specs, commits and final states as the broker delivered them.

All members follow `job/+/spec` and `job/+/state`; the coordinator, its standbys and would-be claimants
also follow `job/+/commits/+` (see `node.py`). Members count a commit
only if its epoch is not below the highest epoch they have seen (the gate in `node.py`). Because one broker
delivers these topics to every member in one order, every member counts the same commits, and a member that
becomes coordinator starts from exactly what clients were told. See `docs/election.md`.
"""

from __future__ import annotations

from swarm.messages import SubmitJob, TaskUpdate

__all__ = ["Replica"]


class Replica:
    """Jobs known to be accepted but not finished, what of them is committed, and recently finished ids."""

    def __init__(self) -> None:
        self.specs: dict[str, SubmitJob] = {}
        self.committed: dict[str, dict[str, TaskUpdate]] = {}
        self.records: dict[str, set[str]] = {}
        self.finished: dict[str, tuple[float, set[str]]] = {}

    def on_spec(self, job: SubmitJob) -> bool:
        """Remember a submission; False when the job already finished (a late resend)."""
        if job.job_id in self.finished:
            return False
        self.specs[job.job_id] = job
        return True

    def on_spec_cleared(self, job_id: str) -> None:
        """The spec was deleted: the job finished or was rejected."""
        self.specs.pop(job_id, None)

    def on_commits(self, job_id: str, updates: tuple[TaskUpdate, ...], topic: str) -> None:
        """Count a retained batch of commits (at `topic`); the first commit of a task stands."""
        if job_id in self.finished:
            self.finished[job_id][1].add(topic)
            return
        self.records.setdefault(job_id, set()).add(topic)
        table = self.committed.setdefault(job_id, {})
        for update in updates:
            table.setdefault(update.task_id, update)

    def forget_commits(self) -> None:
        """This member stops following the job log: what it holds would only go stale."""
        self.committed.clear()
        self.records.clear()

    def on_finished(self, job_id: str, now: float) -> None:
        """The job's final record was published; its commit records are kept until they expire."""
        if job_id not in self.finished:
            self.finished[job_id] = (now, self.records.pop(job_id, set()))
        self.specs.pop(job_id, None)
        self.committed.pop(job_id, None)

    def finished_since(self, since: float) -> list[str]:
        """Jobs whose end we learned at or after `since`, in id order."""
        return sorted(j for j, (at, _) in self.finished.items() if at >= since)

    def active(self) -> list[tuple[SubmitJob, dict[str, TaskUpdate]]]:
        """Unfinished jobs with their commits, in id order."""
        return [(self.specs[j], dict(self.committed.get(j, {}))) for j in sorted(self.specs)]

    def expired(self, now: float, retention: float) -> list[tuple[str, list[str]]]:
        """Finished jobs older than `retention` with the topics of their commit records, forgotten here;
        their retained records may be cleared."""
        old = [(j, sorted(topics)) for j, (at, topics) in self.finished.items() if now - at >= retention]
        for job_id, _ in old:
            del self.finished[job_id]
        return old
