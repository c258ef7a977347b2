"""Quota accounting: how much a user and a team may use, and how much they use now. Pure: `now` comes in.

Resources
---------
* ``concurrent_tasks``, ``cores``, ``memory_gb``: what the running tasks of a user (or team) hold at once,
  from each task's `Requirements` (`min_cores`, `min_memory_gb`). A task that declares no cores still
  occupies one (`MIN_TASK_CORES`), or a user could run anything "for free" by declaring nothing.
* ``tasks_per_day``: tasks submitted in the last 24 hours, a rolling window ending at `now` (a calendar
  day would need a time zone, and lets a user spend two days' worth around midnight). A job is counted
  whole when it is admitted.
* ``mr_input_gb``: the input a MapReduce job declares, limited per job (not summed).

Limits
------
A `Quota` limits one resource for one user or one team, optionally until `expires_at`, after which it
no longer applies (the resource is unlimited again unless another quota says otherwise). There is at most
one quota per (scope, resource); setting another replaces it. A user belongs to at most one team, which
callers pass in with every question; both the user's and the team's quotas apply, and a refusal names the
stricter one.

How a coordinator uses it
-------------------------
`admit_job` when a job arrives: it refuses a job that is over the daily task count, declares too much
input, or has a task that could never run under the limits (more cores than the user may ever hold); an
admitted job is charged to the daily count. `may_start` before placing each task: a task whose owner is
at a concurrent limit stays queued (the refusal is not `permanent`) rather than failing. `started` and
`finished` keep the concurrent usage, keyed by task id, idempotently. A new coordinator after failover
counts the running tasks it adopts as started, and takes the day's admissions from its predecessor's
ledger (`ledger`, which the coordinator keeps retained on the broker, and `restore`). Usage may exceed a
limit (a lowered quota, adopted tasks): nothing is stopped, but no more starts until it falls below.

Amounts in GB are counted in millionths of a GB, as integers, so that starting and finishing tasks in any
order returns usage to exactly zero.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from swarm.messages import Admission, QuotaLine, Requirements, SubmitJob

__all__ = [
    "DAY",
    "LEDGER_GRAIN_S",
    "MIN_TASK_CORES",
    "RESOURCES",
    "Admission",
    "JobDemand",
    "Quota",
    "QuotaBook",
    "Refusal",
    "Resource",
    "ScopeKind",
]

Resource = Literal["concurrent_tasks", "cores", "memory_gb", "mr_input_gb", "tasks_per_day"]
ScopeKind = Literal["user", "team"]

#: Every resource, in the order `usage` lists them.
RESOURCES: tuple[Resource, ...] = ("concurrent_tasks", "cores", "memory_gb", "tasks_per_day", "mr_input_gb")
_COUNTS: frozenset[str] = frozenset({"concurrent_tasks", "cores", "tasks_per_day"})
_SCOPE_KINDS: tuple[ScopeKind, ...] = ("user", "team")

#: The window of `tasks_per_day`, in seconds.
DAY = 86_400.0
#: Admissions of one user and team within this many seconds are one entry of a coordinator's ledger.
LEDGER_GRAIN_S = 60.0
#: Cores a running task holds at least, whatever it declares.
MIN_TASK_CORES = 1
_MICRO = 1_000_000

_Scope = tuple[ScopeKind, str]


@dataclass(frozen=True, slots=True)
class Quota:
    """A limit on one resource for one user or team, until `expires_at` (never, if None)."""

    resource: Resource
    limit: float
    scope_kind: ScopeKind
    scope: str
    expires_at: float | None = None

    def __post_init__(self) -> None:
        """Reject limits that cannot mean anything, whichever way the quota was built."""
        if self.resource not in RESOURCES:
            raise ValueError(f"quota: unknown resource {self.resource!r} (known: {', '.join(RESOURCES)})")
        if self.scope_kind not in _SCOPE_KINDS:
            raise ValueError(f"quota: scope must be 'user' or 'team', got {self.scope_kind!r}")
        if not isinstance(self.scope, str) or not self.scope:
            raise ValueError("quota: the user or team name must not be empty")
        if isinstance(self.limit, bool) or not math.isfinite(self.limit) or self.limit < 0:
            raise ValueError(f"quota: limit must be a finite number >= 0, got {self.limit!r}")
        if self.resource in _COUNTS and self.limit != int(self.limit):
            raise ValueError(f"quota: {self.resource} is a count, got {self.limit!r}")
        if self.expires_at is not None and not math.isfinite(self.expires_at):
            raise ValueError(f"quota: expires_at must be a finite time, got {self.expires_at!r}")

    def applies(self, now: float) -> bool:
        """Whether the quota is in force at `now`."""
        return self.expires_at is None or now < self.expires_at

    @property
    def who(self) -> str:
        """The scope as people read it: ``team 'lab'``."""
        return f"{self.scope_kind} {self.scope!r}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a quota refuses a job or a task: which quota, what is in use, what was asked.

    `permanent` means waiting cannot help (the job or task alone exceeds the limit), so a coordinator
    rejects it; otherwise it may be retried later (a queued task waits for running ones to finish).
    """

    quota: Quota
    used: float
    asked: float
    permanent: bool

    @property
    def message(self) -> str:
        """The refusal as a sentence, e.g. "quota: team 'lab' may run 8 cores at once; this task asks
        for 16"."""
        q, who = self.quota, self.quota.who
        limit, used, asked = _num(q.limit), _num(self.used), _num(self.asked)
        match q.resource:
            case "concurrent_tasks":
                if q.limit < 1:
                    return f"quota: {who} may run no tasks"
                return f"quota: {who} may run {_count(q.limit, 'task')} at once; {used} running"
            case "cores":
                head = f"quota: {who} may run {_count(q.limit, 'core')} at once"
                if self.permanent:
                    return f"{head}; this task asks for {asked}"
                return f"{head}; {used} in use and this task asks for {asked}"
            case "memory_gb":
                head = f"quota: {who} may use {limit} GB of memory at once"
                if self.permanent:
                    return f"{head}; this task asks for {asked} GB"
                return f"{head}; {used} GB in use and this task asks for {asked} GB"
            case "tasks_per_day":
                head = f"quota: {who} may submit {_count(q.limit, 'task')} a day"
                if self.permanent:
                    return f"{head}; this job has {asked}"
                return f"{head}; {used} submitted in the last 24 h and this job has {asked}"
            case "mr_input_gb":
                head = f"quota: {who} may read {limit} GB of MapReduce input per job"
                return f"{head}; this job declares {asked} GB"
        raise AssertionError(q.resource)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class JobDemand:
    """What a submission asks of the quotas: its tasks' requirements and its declared input."""

    tasks: tuple[Requirements, ...]
    input_gb: float = 0.0

    @classmethod
    def of(cls, job: SubmitJob) -> JobDemand:
        """The demand of a submitted job. A MapReduce job's input is the byte ranges its map tasks read
        (what a map reads is exactly the range its payload names)."""
        size = 0
        for task in job.tasks:
            split = task.payload.get("input") if task.type == "mapreduce.map" else None
            if (
                isinstance(split, dict)
                and isinstance(split.get("start"), int)
                and isinstance(split.get("end"), int)
            ):
                size += max(0, split["end"] - split["start"])
        return cls(tuple(task.requirements for task in job.tasks), size / 2**30)


@dataclass(slots=True)
class _Held:
    """What one running task holds, and on whose account (the team as it was when it started)."""

    scopes: tuple[_Scope, ...]
    cores: int
    memory: int  # millionths of a GB


@dataclass(slots=True)
class _Usage:
    tasks: int = 0
    cores: int = 0
    memory: int = 0


class QuotaBook:
    """The quotas in force and what every user and team uses now."""

    def __init__(self, quotas: Iterable[Quota] = ()) -> None:
        self._quotas: dict[tuple[ScopeKind, str, Resource], Quota] = {}
        for quota in quotas:
            key = (quota.scope_kind, quota.scope, quota.resource)
            if key in self._quotas:
                raise ValueError(f"two {quota.resource} quotas for {quota.who}")
            self._quotas[key] = quota
        self._running: dict[str, _Held] = {}
        self._usage: dict[_Scope, _Usage] = {}
        self._day: dict[_Scope, deque[tuple[float, int]]] = {}
        self._day_total: dict[_Scope, int] = {}
        self._admitted: deque[Admission] = deque()

    # --- the quotas ---------------------------------------------------------------------------------

    def set_quota(self, quota: Quota) -> Quota | None:
        """Put `quota` in force, replacing (and returning) the one for the same scope and resource."""
        key = (quota.scope_kind, quota.scope, quota.resource)
        old = self._quotas.get(key)
        self._quotas[key] = quota
        return old

    def remove_quota(self, scope_kind: ScopeKind, scope: str, resource: Resource) -> Quota | None:
        """Lift a limit; returns the quota removed, if there was one."""
        return self._quotas.pop((scope_kind, scope, resource), None)

    def quotas(self) -> list[Quota]:
        """Every quota, expired ones included, by scope then resource."""
        order = {r: i for i, r in enumerate(RESOURCES)}
        return sorted(self._quotas.values(), key=lambda q: (q.scope_kind, q.scope, order[q.resource]))

    # --- jobs ---------------------------------------------------------------------------------------

    def job_refusal(self, principal: str, team: str | None, demand: JobDemand, now: float) -> Refusal | None:
        """Why the job may not be admitted now, or None; charges nothing (see `admit_job`)."""
        refusals: list[Refusal] = []
        n = len(demand.tasks)
        for quota in self._applicable(principal, team, now):
            scope = (quota.scope_kind, quota.scope)
            match quota.resource:
                case "tasks_per_day":
                    used = self._day_used(scope, now)
                    if n > quota.limit:
                        refusals.append(Refusal(quota, used, n, permanent=True))
                    elif used + n > quota.limit:
                        refusals.append(Refusal(quota, used, n, permanent=False))
                case "mr_input_gb":
                    if _micro(demand.input_gb) > _micro(quota.limit):
                        refusals.append(Refusal(quota, 0, demand.input_gb, permanent=True))
                case "concurrent_tasks":
                    if n and quota.limit < 1:
                        refusals.append(Refusal(quota, 0, 1, permanent=True))
                case "cores":
                    most = max((_cores(req) for req in demand.tasks), default=0)
                    if most > quota.limit:
                        refusals.append(Refusal(quota, 0, most, permanent=True))
                case "memory_gb":
                    most_gb = max((req.min_memory_gb for req in demand.tasks), default=0.0)
                    if _micro(most_gb) > _micro(quota.limit):
                        refusals.append(Refusal(quota, 0, most_gb, permanent=True))
        return _strictest(refusals)

    def admit_job(self, principal: str, team: str | None, demand: JobDemand, now: float) -> Refusal | None:
        """Admit the job, charging its tasks to the daily count, or say why not (charging nothing).

        Call it after every other check of the job has passed: an admitted job stays charged.
        """
        refusal = self.job_refusal(principal, team, demand, now)
        if refusal is None and demand.tasks:
            self._admit(Admission(principal, team or "", now, len(demand.tasks)))
        return refusal

    def ledger(self, now: float) -> tuple[Admission, ...]:
        """The admissions still in the daily window, for a successor (`restore`): those of one user and
        team within one minute merged, dated at the minute's end, so the ledger stays small (at most a
        minute's entry per user a day) and a successor counts each task at most a minute too long."""
        self.prune(now)
        merged: dict[tuple[str, str, float], int] = {}
        for a in self._admitted:
            key = (a.principal, a.team, math.ceil(a.at / LEDGER_GRAIN_S) * LEDGER_GRAIN_S)
            merged[key] = merged.get(key, 0) + a.tasks
        ordered = sorted(merged.items(), key=lambda item: item[0][2])
        return tuple(Admission(p, t, at, n) for (p, t, at), n in ordered)

    def restore(self, admitted: Iterable[Admission]) -> None:
        """Take a predecessor's ledger: its admissions count towards the daily limits here too. Call it
        once, before this book admits anything."""
        for admission in sorted(admitted, key=lambda a: a.at):
            if admission.tasks > 0:
                self._admit(admission)

    def _admit(self, admission: Admission) -> None:
        self._admitted.append(admission)
        for scope in _scopes(admission.principal, admission.team or None):
            self._charge_day(scope, admission.at, admission.tasks)

    # --- running tasks ------------------------------------------------------------------------------

    def start_refusal(
        self, principal: str, team: str | None, requirements: Requirements, now: float
    ) -> Refusal | None:
        """Why this task may not start now, or None. A refusal that is not `permanent` goes away when
        running tasks of the same user or team finish."""
        cores, memory = _cores(requirements), _micro(requirements.min_memory_gb)
        refusals: list[Refusal] = []
        for quota in self._applicable(principal, team, now):
            usage = self._usage.get((quota.scope_kind, quota.scope), _Usage())
            match quota.resource:
                case "concurrent_tasks":
                    if usage.tasks + 1 > quota.limit:
                        refusals.append(Refusal(quota, usage.tasks, 1, permanent=quota.limit < 1))
                case "cores":
                    if usage.cores + cores > quota.limit:
                        refusals.append(Refusal(quota, usage.cores, cores, permanent=cores > quota.limit))
                case "memory_gb":
                    limit = _micro(quota.limit)
                    if usage.memory + memory > limit:
                        used_gb, asked_gb = usage.memory / _MICRO, memory / _MICRO
                        refusals.append(Refusal(quota, used_gb, asked_gb, permanent=memory > limit))
        return _strictest(refusals)

    def may_start(self, principal: str, team: str | None, requirements: Requirements, now: float) -> bool:
        """Whether a task with these requirements may start now for `principal` of `team`."""
        return self.start_refusal(principal, team, requirements, now) is None

    def started(self, task_id: str, principal: str, team: str | None, requirements: Requirements) -> bool:
        """Count a task as running; False (and nothing counted) if it already was."""
        if task_id in self._running:
            return False
        held = _Held(_scopes(principal, team), _cores(requirements), _micro(requirements.min_memory_gb))
        self._running[task_id] = held
        for scope in held.scopes:
            usage = self._usage.setdefault(scope, _Usage())
            usage.tasks += 1
            usage.cores += held.cores
            usage.memory += held.memory
        return True

    def finished(self, task_id: str) -> bool:
        """A task stopped running (whatever the outcome); False if it was not counted as running."""
        held = self._running.pop(task_id, None)
        if held is None:
            return False
        for scope in held.scopes:
            usage = self._usage[scope]
            usage.tasks -= 1
            usage.cores -= held.cores
            usage.memory -= held.memory
            if usage.tasks == 0:
                del self._usage[scope]
        return True

    def running(self, task_id: str) -> bool:
        """Whether the task is counted as running."""
        return task_id in self._running

    def prune(self, now: float) -> None:
        """Forget daily counts that have left the window (call now and then, e.g. on a tick)."""
        while self._admitted and self._admitted[0].at <= now - DAY:
            self._admitted.popleft()
        for scope in list(self._day):
            self._day_used(scope, now)

    # --- reporting ----------------------------------------------------------------------------------

    def usage(self, scope_kind: ScopeKind, scope: str, now: float) -> list[QuotaLine]:
        """Every resource of a user or team: its limit in force at `now` (None: unlimited) and its use
        (None for `mr_input_gb`, which limits each job rather than a sum), as `swarm quota` shows them."""
        key: _Scope = (scope_kind, scope)
        current = self._usage.get(key, _Usage())
        used: dict[Resource, float | None] = {
            "concurrent_tasks": current.tasks,
            "cores": current.cores,
            "memory_gb": current.memory / _MICRO,
            "tasks_per_day": self._day_used(key, now),
            "mr_input_gb": None,
        }
        rows = []
        for resource in RESOURCES:
            quota = self._quotas.get((scope_kind, scope, resource))
            if quota is not None and quota.applies(now):
                rows.append(QuotaLine(resource, quota.limit, used[resource], quota.expires_at))
            else:
                rows.append(QuotaLine(resource, None, used[resource]))
        return rows

    def validate(self) -> None:
        """Invariants: usage is the sum of what running tasks hold, never negative; daily counts match."""
        expected: dict[_Scope, _Usage] = {}
        for held in self._running.values():
            for scope in held.scopes:
                usage = expected.setdefault(scope, _Usage())
                usage.tasks += 1
                usage.cores += held.cores
                usage.memory += held.memory
        assert expected == self._usage, (expected, self._usage)
        for usage in self._usage.values():
            assert usage.tasks > 0 and usage.cores >= 0 and usage.memory >= 0, usage
        for scope, window in self._day.items():
            assert self._day_total[scope] == sum(n for _, n in window) >= 0, scope
        assert set(self._day) == set(self._day_total)

    # --- helpers ------------------------------------------------------------------------------------

    def _applicable(self, principal: str, team: str | None, now: float) -> list[Quota]:
        found = []
        for kind, scope in _scopes(principal, team):
            for resource in RESOURCES:
                quota = self._quotas.get((kind, scope, resource))
                if quota is not None and quota.applies(now):
                    found.append(quota)
        return found

    def _charge_day(self, scope: _Scope, at: float, tasks: int) -> None:
        self._day.setdefault(scope, deque()).append((at, tasks))
        self._day_total[scope] = self._day_total.get(scope, 0) + tasks

    def _day_used(self, scope: _Scope, now: float) -> int:
        window = self._day.get(scope)
        if window is None:
            return 0
        while window and window[0][0] <= now - DAY:
            _, n = window.popleft()
            self._day_total[scope] -= n
        if not window:
            del self._day[scope]
            del self._day_total[scope]
            return 0
        return self._day_total[scope]


def _scopes(principal: str, team: str | None) -> tuple[_Scope, ...]:
    return (("user", principal), ("team", team)) if team else (("user", principal),)


def _cores(requirements: Requirements) -> int:
    return max(MIN_TASK_CORES, requirements.min_cores)


def _micro(gb: float) -> int:
    """GB in millionths, rounded: exact integer arithmetic for sums of memory and input sizes."""
    return round(gb * _MICRO)


def _strictest(refusals: list[Refusal]) -> Refusal | None:
    """The refusal to show: one that waiting cannot lift first, then the one with the least room left."""
    if not refusals:
        return None
    return min(
        refusals, key=lambda r: (not r.permanent, r.quota.limit - r.used, r.quota.scope_kind != "user")
    )


def _num(value: float) -> str:
    return f"{value:g}" if value != int(value) or abs(value) >= 1e15 else str(int(value))


def _count(n: float, word: str) -> str:
    return f"{_num(n)} {word}" + ("" if n == 1 else "s")
