"""A submitter's view of its jobs: which commits count, and when a job is over.

A client follows `election`, `coord`, `job/<id>/events` and the retained `job/<id>/commits/+`, and applies
the same epoch gate as every member (a commit stamped below the highest epoch seen is from a deposed
coordinator), so it counts exactly the commits a successor coordinator starts from. The first commit of a
task stands.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarm.core.epochs import claim_in_reach
from swarm.messages import (
    Claim,
    Commit,
    CoordinatorAnnounce,
    Envelope,
    JobAccepted,
    JobRejected,
    TaskUpdate,
)

__all__ = ["JobProgress", "JobTracker"]


@dataclass(slots=True)
class JobProgress:
    """What a submitter knows of one job."""

    total: int
    accepted: bool = False
    rejected: str | None = None
    updates: dict[str, TaskUpdate] = field(default_factory=dict)
    duplicates: int = 0

    @property
    def finished(self) -> bool:
        """Every task has a final state, or the job was rejected."""
        return self.rejected is not None or len(self.updates) >= self.total

    @property
    def ok(self) -> bool:
        """Finished with every task done."""
        done = all(u.state == "done" for u in self.updates.values())
        return self.rejected is None and self.finished and done


class JobTracker:
    """Applies the epoch gate and first-commit-wins to the messages a submitter receives."""

    def __init__(self) -> None:
        self.epoch = 0
        self.coordinator: str | None = None
        #: The acting coordinator's standbys, which follow every job spec and commit as it does.
        self.standbys: tuple[str, ...] = ()
        self.jobs: dict[str, JobProgress] = {}
        self.fenced = 0

    def track(self, job_id: str, total: int) -> JobProgress:
        """Start following a job."""
        return self.jobs.setdefault(job_id, JobProgress(total))

    def on_envelope(self, env: Envelope) -> list[TaskUpdate]:
        """Feed one message; returns the updates that newly count."""
        body = env.body
        match body:
            case Claim(epoch):
                # The same rules as a member's (see `epochs.claim_in_reach` and `node.py`).
                if claim_in_reach(epoch, self.epoch):
                    self.epoch = max(self.epoch, epoch)
            case CoordinatorAnnounce(epoch, coordinator, standbys) if coordinator == env.sender:
                if epoch >= self.epoch:
                    self.epoch, self.coordinator, self.standbys = epoch, coordinator, standbys
            case JobAccepted(job_id):
                if job_id in self.jobs:
                    self.jobs[job_id].accepted = True
            case JobRejected(job_id, reason):
                if job_id in self.jobs:
                    self.jobs[job_id].rejected = reason
            case Commit(job_id, updates):
                if env.epoch < self.epoch:
                    self.fenced += 1
                    return []
                job = self.jobs.get(job_id)
                if job is None:
                    return []
                job.accepted = True
                fresh = []
                for update in updates:
                    if update.task_id in job.updates:
                        if job.updates[update.task_id] != update:
                            job.duplicates += 1
                        continue
                    job.updates[update.task_id] = update
                    fresh.append(update)
                return fresh
            case _:
                pass
        return []
