"""Admission: why the coordinator refuses a submission, an amendment or a reservation.

Each check reads the spec and what the coordinator already tracks, changes nothing, and returns the
reason to refuse (which the submitter is told) or None. A successor adopting a job its predecessor
accepted (`submit_refusal` without `now`) checks the spec's shape, permissions and ids again, since the
predecessor may have died before it checked a spec that was already retained; but not quotas (the job
was admitted and charged once) nor task types (this node may lack a plugin its predecessor had, and the
job may be half done).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping

from swarm.core.jobs import TaskRecord, check_job
from swarm.core.quota import JobDemand, QuotaBook
from swarm.core.reservations import reservation_refusal
from swarm.errors import InvalidSpec
from swarm.messages import SubmitJob, TaskSpec
from swarm.trust.roles import allowed, permission_refusal

__all__ = ["TaskValidator", "amend_refusal", "owner_refusal", "reserve_refusal", "submit_refusal"]

#: Returns why a task can never run (unknown type, bad payload), or None when it may.
TaskValidator = Callable[[TaskSpec], str | None]


def submit_refusal(
    job: SubmitJob,
    tasks: Mapping[str, TaskRecord],
    reserved: Container[str],
    validator: TaskValidator,
    quotas: QuotaBook,
    now: float | None,
) -> str | None:
    """Why `job` can never run beside the `tasks` tracked and the `reserved` ids, or None. Quotas and task
    types are asked only of a new submission (`now` given)."""
    try:
        check_job(job)
    except InvalidSpec as exc:
        return str(exc)
    refusal = permission_refusal(job)
    if refusal is not None:
        return refusal
    if now is not None:
        over = quotas.job_refusal(job.submitted_by, job.team or None, JobDemand.of(job), now)
        if over is not None:
            return str(over)
    if job.job_id in reserved:
        return f"job id {job.job_id!r} is already used by a reservation"
    return _tasks_refusal(job.tasks, tasks, validator if now is not None else None)


def amend_refusal(
    amended: SubmitJob, added: Iterable[TaskSpec], tasks: Mapping[str, TaskRecord], validator: TaskValidator
) -> str | None:
    """Why a running job may not become `amended` by adding the tasks `added`, or None."""
    try:
        check_job(amended)
    except InvalidSpec as exc:
        return str(exc)
    refusal = _tasks_refusal(added, tasks, validator)
    return refusal if refusal is not None else permission_refusal(amended)


def reserve_refusal(job: SubmitJob, jobs: Container[str], now: float | None) -> str | None:
    """Why a reservation may not hold slots beside the `jobs` tracked, or None; a new one (`now` given)
    is held to the longest a reservation may last."""
    refusal = reservation_refusal(job, now)
    if refusal is None and job.job_id in jobs:
        refusal = f"reservation id {job.job_id!r} is already used by a job"
    if refusal is None and not allowed(job.role, "submit"):
        who = job.submitted_by or "the sender"
        refusal = f"role {job.role or 'none'!r} of {who} may not reserve slots"
    return refusal


def owner_refusal(by: str, role: str, owner: str, what: str) -> str | None:
    """Why `by` (with `role`) may not `what` (`"cancel job j1"`) of `owner`, or None: only the owner, or a
    role with the `cancel_any` permission, may change or end what was submitted."""
    if by == owner or allowed(role, "cancel_any"):
        return None
    return f"{by or 'this sender'} may not {what} of {owner}"


def _tasks_refusal(
    specs: Iterable[TaskSpec], tasks: Mapping[str, TaskRecord], validator: TaskValidator | None
) -> str | None:
    """Why one of `specs` may not be tracked: its id is taken, or (when asked) `validator` refuses it."""
    for spec in specs:
        if spec.task_id in tasks:
            return f"task id {spec.task_id!r} is already used by job {tasks[spec.task_id].job_id}"
        why = validator(spec) if validator is not None else None
        if why is not None:
            return f"task {spec.task_id!r}: {why}"
    return None
