"""The scheduler's side of quotas: charging the tasks it starts, holding back those over a limit, and
keeping the ledger a successor starts from.

Theory of operation
-------------------
`quota.py` counts (`QuotaBook`); this module applies the counts to the scheduler's queue:

* Starts. A ready task whose owner (or team) is at a concurrent limit is held back, by owner, out of the
  ready queue, so it never blocks the queue for anyone else; it goes back when one of the owner's tasks
  stops running (`finished` hands back what to requeue), or when the quotas change.
* Ledger. Each admitted job with tasks makes the day's admissions due to be published as a retained
  `QuotaLedger`, at most once every `LEDGER_EVERY_S`: what a successor misses is what was admitted in
  the last second of its predecessor.
"""

from __future__ import annotations

from collections.abc import Iterable

from swarm.core.jobs import ReadyEntry
from swarm.core.quota import JobDemand, Quota, QuotaBook, Refusal
from swarm.messages import QuotaLedger, Requirements, SubmitJob

__all__ = ["LEDGER_EVERY_S", "QuotaGate"]

#: Least time between two publishes of the quota ledger (`QuotaLedger`), in seconds.
LEDGER_EVERY_S = 1.0


class QuotaGate:
    """Quotas as the coordinator applies them to the jobs it admits and the tasks it starts."""

    def __init__(self, book: QuotaBook) -> None:
        self._book = book
        #: Ready tasks held back because their owner is at a quota, by owner.
        self._held_back: dict[str, list[ReadyEntry]] = {}
        self._ledger_due = False
        self._next_ledger = 0.0

    def admit(self, job: SubmitJob, now: float) -> None:
        """Charge an accepted `job` to its owner's daily count."""
        self._book.admit_job(job.submitted_by, job.team or None, JobDemand.of(job), now)
        self._ledger_due = self._ledger_due or bool(job.tasks)

    def start_refusal(self, owner: SubmitJob, req: Requirements, now: float) -> Refusal | None:
        """Why a task of job `owner` with requirements `req` may not start now, or None."""
        return self._book.start_refusal(owner.submitted_by, owner.team or None, req, now)

    def hold_back(self, owner: SubmitJob, item: ReadyEntry) -> None:
        """A ready task of job `owner` refused a start: keep its entry until its owner has room again."""
        self._held_back.setdefault(owner.submitted_by, []).append(item)

    def started(self, task_id: str, owner: SubmitJob, req: Requirements) -> None:
        """A task of job `owner` is running: its owner's usage grows."""
        self._book.started(task_id, owner.submitted_by, owner.team or None, req)

    def finished(self, task_id: str, owner: SubmitJob) -> list[ReadyEntry]:
        """The task stopped running: the entries its owner's room lets back into the ready queue."""
        if not self._book.finished(task_id):
            return []
        return self._held_back.pop(owner.submitted_by, [])

    def set_quotas(self, quotas: Iterable[Quota]) -> list[ReadyEntry]:
        """The cluster's quotas changed: apply them to what runs now; every entry held back, to requeue."""
        for old in self._book.quotas():
            self._book.remove_quota(old.scope_kind, old.scope, old.resource)
        for quota in quotas:
            self._book.set_quota(quota)
        released = [item for items in self._held_back.values() for item in items]
        self._held_back.clear()
        return released

    def ledger(self, now: float) -> QuotaLedger | None:
        """The ledger to publish now, if admissions changed since the last and it is time."""
        if not self._ledger_due or now < self._next_ledger:
            return None
        self._ledger_due, self._next_ledger = False, now + LEDGER_EVERY_S
        return QuotaLedger(self._book.ledger(now))
