"""Every member's copy of the durable job log: specs, commits and final states as the broker delivered them.

All members follow `job/+/spec`, `job/+/events`, `job/+/commits/+` and `job/+/state`, and count a commit
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
        self.finished: dict[str, tuple[float, int]] = {}

    def on_spec(self, job: SubmitJob) -> bool:
        """Remember a submission; False when the job already finished (a late resend)."""
        if job.job_id in self.finished:
            return False
        self.specs[job.job_id] = job
        return True

    def on_spec_cleared(self, job_id: str) -> None:
        """The spec was deleted: the job finished or was rejected."""
        self.specs.pop(job_id, None)

    def on_commits(self, job_id: str, updates: tuple[TaskUpdate, ...]) -> None:
        """Count commits; the first commit of a task is the one that stands."""
        if job_id in self.finished:
            return
        table = self.committed.setdefault(job_id, {})
        for update in updates:
            table.setdefault(update.task_id, update)

    def on_finished(self, job_id: str, chunks: int, now: float) -> None:
        """The job's final record was published, its commits in `chunks` retained chunks."""
        self.finished.setdefault(job_id, (now, chunks))
        self.specs.pop(job_id, None)
        self.committed.pop(job_id, None)

    def active(self) -> list[tuple[SubmitJob, dict[str, TaskUpdate]]]:
        """Unfinished jobs with their commits, in id order."""
        return [(self.specs[j], dict(self.committed.get(j, {}))) for j in sorted(self.specs)]

    def expired(self, now: float, retention: float) -> list[tuple[str, int]]:
        """Finished jobs older than `retention` with their chunk counts, forgotten here; their retained
        records may be cleared."""
        old = [(j, chunks) for j, (at, chunks) in self.finished.items() if now - at >= retention]
        for job_id, _ in old:
            del self.finished[job_id]
        return old
