"""Reservations: execution slots held on chosen members for a run that has not started yet.

Theory of operation
-------------------
A reservation is a job of kind `reservation` (`swarm.messages.RESERVATION_KIND`) with no tasks: its spec,
retained on `job/<id>/spec` like any job's, says how many slots it holds on which members (`holds`) and
until when (`expires`, wall-clock seconds). So it survives a coordinator's failover the way a job does:
the standbys follow the specs into their replica, and a successor adopts it with the jobs; it ends the
way a job does too, with a retained final state that clears its spec later.

What it holds is counted in the scheduler's unit of capacity, the execution slot (`Heartbeat.slots`;
cores, memory and the rest are what a member *has*, checked by placement, not shares handed out). Per
member, the slots held are:

* before its run starts: `holds` of the member;
* once the run's job is accepted (its spec names the reservation in `meta["allocation"]`, and has the
  same submitter): the run's tasks pinned to that member (`Requirements.pin`) that have not started yet
  (waiting or queued), at most `holds`. Each task that starts there takes one held slot over, so its
  member's load does not change, and a task that is skipped, fails before it starts, or is requeued
  after a failure gives it back or takes it again. Nothing else is stored, so a successor that adopts
  both the reservation and the run derives the same numbers from the run's tasks.

A reservation ends when it expires, when its run's job ends, or when its submitter (or an operator)
cancels it; the slots come free at once. Other work is not placed where it would use a held slot, and a
member with held slots takes no prefetched work beyond its free slots (`placement.Candidate.has_room`).
A reservation does not preempt: slots busy when it was made are held as they come free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from swarm.messages import SubmitJob

__all__ = ["CLOCK_SLACK_S", "MAX_HOLDS", "MAX_HOLD_S", "Reservation", "Reservations", "reservation_refusal"]

#: Most members one reservation may hold slots on.
MAX_HOLDS = 1000
#: Longest a reservation may hold slots, from when it is made (seconds).
MAX_HOLD_S = 3600.0
#: How far the clock of the node that made a reservation may run ahead of the coordinator's.
CLOCK_SLACK_S = 60.0
_NOT_STARTED = ("waiting", "queued")


@dataclass(slots=True)
class Reservation:
    """One reservation: its spec's holds and expiry, and the run that claimed it."""

    spec: SubmitJob
    res_id: str
    owner: str
    holds: dict[str, int]
    expires: float
    #: The job id of the run that uses it, once that run's job is accepted.
    run: str | None = None
    #: The run's tasks pinned to each held member.
    tasks: dict[str, tuple[str, ...]] = field(default_factory=dict)


def reservation_refusal(job: SubmitJob, now: float | None) -> str | None:
    """Why a reservation's spec is malformed, or None; a new one (`now` given) may not hold longer than
    `MAX_HOLD_S`."""
    if job.tasks:
        return f"reservation {job.job_id} has tasks"
    if job.expires is None:
        return f"reservation {job.job_id} has no expiry"
    if now is not None and job.expires > now + MAX_HOLD_S + CLOCK_SLACK_S:
        return f"reservation {job.job_id} would hold slots longer than {MAX_HOLD_S:g}s"
    if not job.holds or len(job.holds) > MAX_HOLDS:
        return f"reservation {job.job_id} must hold slots on 1 to {MAX_HOLDS} members"
    if len({h.node for h in job.holds}) != len(job.holds):
        return f"reservation {job.job_id} names a member twice"
    if any(h.slots < 1 for h in job.holds):
        return f"reservation {job.job_id} holds fewer than one slot on a member"
    return None


class Reservations:
    """The reservations the coordinator holds, by id, by member and by the run that claimed them."""

    def __init__(self) -> None:
        self._by_id: dict[str, Reservation] = {}
        self._by_node: dict[str, set[str]] = {}
        self._by_run: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def __contains__(self, res_id: object) -> bool:
        return res_id in self._by_id

    def get(self, res_id: str) -> Reservation | None:
        """The reservation with this id."""
        return self._by_id.get(res_id)

    def add(self, job: SubmitJob) -> Reservation:
        """Hold what a (checked) reservation spec asks."""
        assert job.expires is not None
        holds = {h.node: h.slots for h in job.holds}
        res = Reservation(job, job.job_id, job.submitted_by, holds, job.expires)
        self._by_id[res.res_id] = res
        for node in res.holds:
            self._by_node.setdefault(node, set()).add(res.res_id)
        return res

    def claim(self, res_id: str, run: SubmitJob) -> bool:
        """`run` (an accepted job naming `res_id`) takes the reservation over, if it is free and the run
        has the same submitter; whether it did."""
        res = self._by_id.get(res_id)
        if res is None or res.run is not None or run.submitted_by != res.owner:
            return False
        res.run = run.job_id
        pinned: dict[str, list[str]] = {}
        for spec in run.tasks:
            pin = spec.requirements.pin
            if pin and pin[0] in res.holds:
                pinned.setdefault(pin[0], []).append(spec.task_id)
        res.tasks = {node: tuple(ids) for node, ids in pinned.items()}
        self._by_run[run.job_id] = res_id
        return True

    def all(self) -> list[Reservation]:
        """Every reservation, by id."""
        return [self._by_id[k] for k in sorted(self._by_id)]

    def claimed(self) -> list[Reservation]:
        """The reservations a run took over, by id."""
        return [self._by_id[k] for k in sorted(self._by_run.values())]

    def of_run(self, job_id: str) -> Reservation | None:
        """The reservation a run claimed."""
        res_id = self._by_run.get(job_id)
        return None if res_id is None else self._by_id.get(res_id)

    def remove(self, res_id: str) -> Reservation | None:
        """Stop holding; the reservation, if there was one."""
        res = self._by_id.pop(res_id, None)
        if res is None:
            return None
        for node in res.holds:
            ids = self._by_node.get(node)
            if ids is not None:
                ids.discard(res_id)
                if not ids:
                    del self._by_node[node]
        if res.run is not None:
            self._by_run.pop(res.run, None)
        return res

    def expired(self, now: float) -> list[str]:
        """Reservations whose time is up, by id."""
        return sorted(r.res_id for r in self._by_id.values() if r.expires <= now)

    def nodes(self) -> list[str]:
        """Members some reservation holds slots on, by id."""
        return sorted(self._by_node)

    def held(self, node: str, state_of: Callable[[str], str | None]) -> int:
        """Slots held on `node` now; `state_of` gives a task's state (None once its job is gone)."""
        total = 0
        for res_id in self._by_node.get(node, ()):
            res = self._by_id[res_id]
            cap = res.holds[node]
            if res.run is None:
                total += cap
            else:
                waiting = sum(1 for t in res.tasks.get(node, ()) if state_of(t) in _NOT_STARTED)
                total += min(cap, waiting)
        return total
