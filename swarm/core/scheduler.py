"""The coordinator: accepts jobs, places attempts, commits every task's final state exactly once.

Theory of operation
-------------------
A scheduler exists only on the node acting for an epoch; its messages carry that epoch, and every other
member drops coordinator traffic of older epochs, so a deposed scheduler is harmless.

* Durability. A job's spec is retained on the broker (`job/<id>/spec`) by the client, before any coordinator
  sees it. Each batch of commits is its own retained record (`job/<id>/commits/<epoch>.<n>`), which the
  coordinator, its standbys and any claimant follow (`replica.py`): durable as soon as it is published,
  readable by a member that subscribes later. A successor therefore starts from every commit an observer
  counted, and re-runs only uncommitted tasks.
* Takeover. A new coordinator waits `takeover_grace` for `WorkerReport`s before re-queueing uncommitted
  tasks: attempts a live worker still holds are adopted, not run twice.
* Attempts. Each assignment is `(task_id, attempt)`; only a result for the current attempt of a running
  task counts, so late results of timed-out, lost or cancelled attempts are dropped.
* Placement. Live members (updated by `on_member` with every heartbeat) and which of them have room live
  in a `Roster`, which picks a device for each task at a cost that does not grow with the cluster. A task
  no member could ever run is *blocked* with its reason and fails after its pending timeout.
* Acknowledgements. Every result taken in is acknowledged to its worker, with the worker's next
  assignments, in one `Assign` per drain (`outbox.py`); a result that committed its task only once that
  commit is published.
* The job log. When commits go out (paced per job), their echoes and records published again are
  `joblog.py`'s.
* Constraints. A task's required labels, tolerated taints and pinned members are properties of the
  task and the member (`placement.unmet`); anti-affinity is the scheduler's, which knows where each task
  of a job runs or last ran: a task whose requirements `avoid` other tasks is not placed on their members.
* Preemption. A ready task whose requirements allow it to `preempt` may take the place of a running
  attempt of lower priority when no member has room (`preemption.py` has its rules and chooses); the
  victim is requeued at once without spending one of its retries.
* Reservations. A job of kind `reservation` holds execution slots on members for a run that has not
  started (`reservations.py` has its rules): no other task is placed into them, nor preempts into them;
  the run's tasks pinned there take them over as they start, ahead of the queue.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from swarm import topics
from swarm.core.admission import TaskValidator, amend_refusal, owner_refusal, reserve_refusal, submit_refusal
from swarm.core.config import CoreConfig
from swarm.core.events import ClearRetained, Effect, Publish
from swarm.core.joblog import JobLog
from swarm.core.jobs import JobRecord, ReadyEntry, TaskRecord, piped_payload
from swarm.core.membership import Member
from swarm.core.outbox import WorkerOutbox
from swarm.core.placement import Candidate, unmet, unmet_by_all
from swarm.core.preemption import Preemption, most_urgent
from swarm.core.quota import Quota, QuotaBook
from swarm.core.quotagate import QuotaGate
from swarm.core.reservations import Reservations
from swarm.core.retry import Rng, backoff_delay, should_retry
from swarm.core.roster import Roster
from swarm.core.story import Story
from swarm.messages import (
    PRIORITIES,
    RESERVATION_KIND,
    TERMINAL_STATES,
    Amend,
    Assign,
    Assignment,
    AttemptsSpent,
    CancelAttempt,
    JobAccepted,
    JobRejected,
    JobState,
    Started,
    SubmitJob,
    TaskRef,
    TaskResult,
    TaskSpec,
    TasksReply,
    TasksStarted,
    TaskState,
    TaskSummary,
    TaskUpdate,
    WorkerReport,
)
from swarm.workflow.gate import decide
from swarm.workflow.lineage import recipes

__all__ = ["Scheduler"]

#: An attempt a worker's report does not account for, though the worker has not seen the Assign that
#: carried it, is taken for lost once it was assigned this long ago (a restarted process sees no Assign).
LOST_WITHOUT_SIGN_S = 30.0


class Scheduler:
    """The task table of the coordinator acting for `epoch`."""

    def __init__(
        self,
        self_id: str,
        epoch: int,
        config: CoreConfig,
        rng: Rng,
        validator: TaskValidator,
        dispatch_after: float = 0.0,
        quotas: Iterable[Quota] = (),
        story: Story | None = None,
    ) -> None:
        self.self_id = self_id
        #: The story of the node this scheduler acts for (`NodeMachine.story`), which it adds to.
        self._story = Story() if story is None else story
        self.epoch = epoch
        self._config = config
        self._rng = rng
        self._validator = validator
        self.jobs: dict[str, JobRecord] = {}
        self.tasks: dict[str, TaskRecord] = {}
        self._ready: list[ReadyEntry] = []
        self._delayed: list[tuple[float, str]] = []
        self._deadlines: list[tuple[float, str, int]] = []
        self._blocked: set[str] = set()
        self._finished_jobs: set[str] = set()
        #: Finished jobs whose final record waits until all their commits are durable (`joblog.py`).
        self._closing: set[str] = set()
        #: Of those, the ones whose last commit came back since the last drain.
        self._durable: set[str] = set()
        #: Jobs closed, for `NodeMachine` to take.
        self._closed: list[str] = []
        self._seq = 0
        self._held: dict[str, set[str]] = {}
        self._exclusive: dict[str, int] = {}
        self._roster = Roster(config)
        self._outbox = WorkerOutbox(self_id, epoch, config.heartbeat_interval)
        self._started: dict[str, list[Started]] = {}
        self._touched: set[str] = set()
        self._log = JobLog(epoch, config)
        self._effects: list[Effect] = []
        self._dispatch_after = dispatch_after
        self._recent: deque[TaskSummary] = deque(maxlen=1000)
        self.quotas = QuotaBook(quotas)
        self._quota_gate = QuotaGate(self.quotas)
        #: Attempts per task that spend none of its retries: preempted ones, and ones lost with a member
        #: that turned out alive (`_lost_with`).
        self._free_attempts: dict[str, int] = {}
        #: Attempts lost with a member declared dead: its last heartbeat's sequence number, and the tasks.
        #: When the same process heartbeats again (its sequence goes on), the death was false (an
        #: overloaded member or observer, `docs/election.md`) and those attempts are not the task's
        #: fault. A restarted process starts its sequence again: a task that crashes its device still
        #: spends its retries.
        self._lost_with: dict[str, tuple[int, list[str]]] = {}
        self._preemption = Preemption(config.weights)
        #: Jobs with a task that may preempt: without one, a full cluster has no preemption to look for.
        self._preempting: set[str] = set()
        self.reservations = Reservations()
        self.metrics: dict[str, int] = {}

    # --- intake -------------------------------------------------------------------------------------

    def adopt(
        self,
        job: SubmitJob,
        committed: dict[str, TaskUpdate],
        now: float,
        spent: Mapping[str, AttemptsSpent] | None = None,
    ) -> None:
        """Take over a job a previous coordinator accepted; committed tasks stay committed, and the others
        go on from the attempts they `spent` (their next attempt numbered after it, their retries used).

        The spec's shape, permissions and task ids are checked as a new submission's are: the previous
        coordinator may have died before it checked a spec that was already retained. Task types are
        not: this node may lack a plugin its predecessor had, and the job may be half done. Only final
        states of the job's own tasks count as committed: a record saying anything else is no commit.
        A reservation is held again, until the expiry its spec gives.
        """
        if job.kind == RESERVATION_KIND:
            self._on_reservation(job, now, announce=False)
            return
        if job.job_id in self.jobs:
            return
        refusal = submit_refusal(job, self.tasks, self.reservations, self._validator, self.quotas, None)
        if refusal is not None:
            self._reject(job, refusal, now)
            return
        ours = {spec.task_id for spec in job.tasks}
        final = {k: u for k, u in committed.items() if k in ours and u.state in TERMINAL_STATES}
        if len(final) != len(committed):
            self._count("bad_commits")
        self._add_job(job, final, now, announce=False, spent=spent)

    def on_submit(self, job: SubmitJob, now: float) -> None:
        """A new (or resent) submission: accept it once, or reject it with the reason."""
        if job.kind == RESERVATION_KIND:
            self._on_reservation(job, now, announce=True)
            return
        if job.job_id in self.jobs:
            self._publish_event(job.job_id, JobAccepted(job.job_id, len(job.tasks)))
            return
        refusal = submit_refusal(job, self.tasks, self.reservations, self._validator, self.quotas, now)
        if refusal is not None:
            self._reject(job, refusal, now)
            return
        self._quota_gate.admit(job, now)
        self._add_job(job, {}, now, announce=True)

    def _reject(self, job: SubmitJob, reason: str, now: float) -> None:
        self._count("jobs_rejected")
        self._story.record(now, "warning", f"rejected job {job.job_id}: {reason}", job.job_id)
        self._publish_event(job.job_id, JobRejected(job.job_id, reason))
        self._effects.append(ClearRetained(topics.job_spec(job.job_id)))

    def _add_job(
        self,
        job: SubmitJob,
        committed: dict[str, TaskUpdate],
        now: float,
        announce: bool,
        spent: Mapping[str, AttemptsSpent] | None = None,
    ) -> None:
        # Adopted commits are published again under this epoch, which late joiners' gates accept.
        record = JobRecord(job, {}, committed=dict(committed))
        self.jobs[job.job_id] = record
        self._log.publish_again(record)
        if announce:
            self._publish_event(job.job_id, JobAccepted(job.job_id, len(job.tasks)))
        self._add_tasks(record, job.tasks, now, spent)
        res_id = job.meta.get("allocation")
        if res_id and self.reservations.claim(res_id, job):
            self._count("reservations_claimed")

    def _on_reservation(self, job: SubmitJob, now: float, announce: bool) -> None:
        """Hold a reservation's slots (a resend is accepted again), or reject it with the reason. A run
        already accepted that names it (adopted first by a successor) takes it over at once."""
        if job.job_id in self.reservations:
            if announce:
                self._publish_event(job.job_id, JobAccepted(job.job_id, 0))
            return
        refusal = reserve_refusal(job, self.jobs, now if announce else None)
        if refusal is not None:
            self._reject(job, refusal, now)
            return
        res = self.reservations.add(job)
        self._count("reservations")
        if announce:
            self._publish_event(job.job_id, JobAccepted(job.job_id, 0))
        for record in self.jobs.values():
            if record.spec.meta.get("allocation") == res.res_id and self.reservations.claim(
                res.res_id, record.spec
            ):
                break
        self._refresh_loads(res.holds)

    def _end_reservation(self, res_id: str, why: str, now: float) -> None:
        """Free a reservation's slots and publish its final record, which clears its spec in time."""
        res = self.reservations.remove(res_id)
        if res is None:
            return
        self._story.record(now, "info", f"reservation {res_id} ended: {why}", res_id)
        self._effects.append(
            Publish(topics.job_state(res_id), JobState(res_id, 0), epoch=self.epoch, retain=True)
        )
        self._closed.append(res_id)
        self._count("reservations_ended")
        self._refresh_loads(res.holds)

    def _refresh_loads(self, nodes: Iterable[str]) -> None:
        for node in nodes:
            self._roster.set_load(node, *self._load(node))

    def _add_tasks(
        self,
        record: JobRecord,
        specs: Iterable[TaskSpec],
        now: float,
        spent: Mapping[str, AttemptsSpent] | None = None,
    ) -> None:
        """Track `specs` as tasks of `record` (a new job's, or those an amendment adds): wire them to
        their predecessors and start, gate or fail those whose predecessors are final already."""
        committed = record.committed
        tasks = {spec.task_id: TaskRecord(spec, record.spec.job_id, "waiting") for spec in specs}
        if any(t.spec.requirements.preempt for t in tasks.values()):
            self._preempting.add(record.spec.job_id)
        for used in (spent or {}).values():
            rec = tasks.get(used.task_id)
            if rec is not None and used.task_id not in committed:
                rec.attempt = used.attempt
                if used.preempted:
                    self._free_attempts[used.task_id] = used.preempted
        record.tasks.update(tasks)
        self.tasks.update(tasks)
        for rec in tasks.values():
            if rec.task_id in committed:
                rec.state = committed[rec.task_id].state
                continue
            # A workflow step waits for its predecessors to be final; any other task for them to be done.
            gated = bool(rec.spec.inflows)
            rec.waiting_on = {
                d
                for d in rec.spec.after
                if d not in committed or (not gated and committed[d].state != "done")
            }
            for dep in rec.spec.after:
                record.tasks[dep].dependents.append(rec.task_id)
        for rec in tasks.values():
            if rec.state != "waiting":
                continue
            failed = [d for d in rec.spec.after if d in committed and committed[d].state != "done"]
            if rec.spec.inflows:
                if not rec.waiting_on:
                    self._gate(rec, record, now)
            elif failed:
                self._finish(rec, "failed", now, error=f"dependency {failed[0]} did not succeed")
            elif not rec.waiting_on:
                self._enqueue(rec, now, "ready")
        if record.finished:
            self._finished_jobs.add(record.spec.job_id)

    def on_amend(self, amend: Amend, now: float) -> str | None:
        """Change a running job: skip tasks not started yet, add tasks (workflow steps added to a run);
        the reason when nothing was changed. The amended spec is published as the job's retained spec,
        so a successor coordinator adopts the job as amended."""
        job = self.jobs.get(amend.job_id)
        if job is None or job.finished:  # a finished job stays until its final record is out
            return f"no running job {amend.job_id!r}"
        refusal = owner_refusal(amend.by, amend.role, job.spec.submitted_by, f"change job {amend.job_id}")
        if refusal is not None:
            return refusal
        for task_id in amend.skip:
            rec = job.tasks.get(task_id)
            if rec is None or rec.state not in ("waiting", "queued"):
                state = "unknown" if rec is None else rec.state
                return f"cannot skip {task_id}: only a task not started yet can be skipped (it is {state})"
        amended = replace(job.spec, tasks=(*job.spec.tasks, *amend.add))
        refusal = amend_refusal(amended, amend.add, self.tasks, self._validator)
        if refusal is not None:
            return refusal
        for task_id in amend.skip:
            self._finish(job.tasks[task_id], "skipped", now, error="skipped by request")
        if amend.add:
            job.spec = amended
            self._add_tasks(job, amend.add, now)
            spec = Publish(topics.job_spec(amend.job_id), amended, epoch=self.epoch, retain=True)
            self._effects.append(spec)
        self._count("amendments")
        return None

    # --- results and reports ------------------------------------------------------------------------

    def on_results(self, sender: str, results: Iterable[TaskResult], now: float) -> None:
        """Commit or retry each finished attempt; drop results of attempts that no longer count."""
        for res in results:
            ack = TaskRef(res.task_id, res.job_id, res.attempt)
            rec = self.tasks.get(res.task_id)
            if (
                rec is not None
                and sender == self.self_id
                and res.kind == "ok"
                and rec.state == "queued"
                and rec.attempt <= res.attempt
            ):
                # A success of our own worker's attempt, handed over in memory before its report came back:
                # take it. Another node's attempts we did not know of are adopted from its WorkerReport
                # only, so a result counts only from the node that holds the attempt.
                self._adopt(rec, sender, res.attempt, now)
            if rec is not None and rec.state == "running" and rec.node != sender:
                self._count("foreign_results")
                continue
            if rec is None or rec.state != "running" or rec.attempt != res.attempt:
                self._count("stale_results")
                self._outbox.ack([(sender, ack)])
                continue
            self._release(rec)
            if res.finished_at and res.started_at and sender != self.self_id:
                # Our own worker is reached in memory, over no link: measuring it would count the cold
                # start of its first attempt as one, and it would lose every tie to the other members.
                spent = (now - rec.assigned_at) * 1000 - (res.finished_at - res.started_at) * 1000
                self._roster.observe_latency(sender, spent, now)
            if res.kind == "refused":
                self._refused(rec, sender, res.error or "refused", now)
            elif res.kind == "ok":
                self._finish(
                    rec, "done", now, result=res.result, started=res.started_at, finished=res.finished_at
                )
            else:
                self._failed_attempt(rec, res.kind, res.error or res.kind, now, res.retry_after)
            job = self.jobs[rec.job_id]
            if rec.task_id in job.committed:
                self._log.hold_ack(job, sender, ack)
            else:
                self._outbox.ack([(sender, ack)])

    def on_worker_report(self, sender: str, report: WorkerReport, now: float) -> None:
        """Adopt attempts a worker still holds; take in results it finished while we were not acting."""
        for ref in report.held:
            rec = self.tasks.get(ref.task_id)
            if rec is not None and rec.state == "queued" and rec.attempt <= ref.attempt:
                self._adopt(rec, sender, ref.attempt, now)
        for res in report.results:
            rec = self.tasks.get(res.task_id)
            if rec is not None and rec.state == "queued" and rec.attempt <= res.attempt:
                self._adopt(rec, sender, res.attempt, now)
        self.on_results(sender, report.results, now)
        # What we think runs there but the worker neither holds nor finished is lost (a lost assignment, a
        # restarted process) - once the worker has seen the Assign that carried it: under overload a
        # report can predate an assignment by many seconds. A restarted process has seen none, hence
        # the bound in time.
        accounted = {ref.task_id for ref in report.held} | {res.task_id for res in report.results}
        long_ago = now - LOST_WITHOUT_SIGN_S
        for task_id in sorted(self._held.get(sender, set()) - accounted):
            rec = self.tasks[task_id]
            if rec.assign_seq <= report.assigns_seen or rec.assigned_at <= long_ago:
                why = f"{sender} no longer holds attempt {rec.attempt}"
                self._failed_attempt(rec, "lost", why, now, None)

    def _adopt(self, rec: TaskRecord, node: str, attempt: int, now: float) -> None:
        """An attempt of an earlier epoch is still alive on `node`: count it as ours instead of re-running."""
        self._unqueue(rec)
        rec.attempt = attempt
        rec.node = node
        rec.assign_seq = 0
        rec.move("running", now, f"adopted attempt {attempt} from {node}")
        self._hold(rec, node, now)

    def on_member(self, member: Member, now: float) -> None:
        """A member's heartbeat or state: only alive members get work, and a dead member's attempts are
        lost, so they are retried elsewhere."""
        node_id = member.node_id
        hb = member.heartbeat
        if member.state == "alive" and hb is not None:
            self._roster.upsert(node_id, hb, now, *self._load(node_id))
            lost = self._lost_with.pop(node_id, None)
            if lost is not None and hb.seq > lost[0]:
                for task_id in lost[1]:
                    if task_id in self.tasks:
                        self._free_attempts[task_id] = self._free_attempts.get(task_id, 0) + 1
            return
        self._roster.remove(node_id)
        if member.state != "dead":
            return
        self._exclusive.pop(member.node_id, None)
        lost_ids = sorted(self._held.pop(member.node_id, set()))
        if lost_ids:
            self._lost_with[node_id] = (hb.seq if hb is not None else 0, lost_ids)
        for task_id in lost_ids:
            rec = self.tasks[task_id]
            rec.node = None
            self._unthrottle(rec)
            self._failed_attempt(rec, "lost", f"node {member.node_id} died", now, None, release=False)

    def on_cancel(self, target: str, by: str, role: str, now: float) -> str | None:
        """Cancel a task, or every unfinished task of a job; the reason if nothing was cancelled.

        Only the job's submitter, or a role with the `cancel_any` permission, may cancel it.
        """
        if target in self.reservations:
            res = self.reservations.get(target)
            assert res is not None
            refusal = owner_refusal(by, role, res.owner, f"cancel reservation {target}")
            if refusal is not None:
                self._count("cancels_refused")
                return refusal
            self._end_reservation(target, f"cancelled by {by or 'request'}", now)
            return None
        if target in self.jobs:
            job = self.jobs[target]
            recs = list(job.tasks.values())
        elif target in self.tasks:
            job = self.jobs[self.tasks[target].job_id]
            recs = [self.tasks[target]]
        else:
            return f"no task or job {target!r}"
        refusal = owner_refusal(by, role, job.spec.submitted_by, f"cancel job {job.spec.job_id}")
        if refusal is not None:
            self._count("cancels_refused")
            return refusal
        for rec in recs:
            if rec.state not in TERMINAL_STATES:
                self._finish(rec, "cancelled", now, error="cancelled by request")
        return None

    def on_tasks_query(self, limit: int, job_id: str | None, ref: str) -> TasksReply:
        """The newest tasks first, at most `limit`."""
        live = [rec.summary() for rec in self.tasks.values()]
        rows = [s for s in [*self._recent, *live] if job_id is None or s.job_id == job_id]
        return TasksReply(tuple(rows[-limit:][::-1]), ref=ref)

    # --- time and placement -------------------------------------------------------------------------

    def on_echo(self, topic: str) -> None:
        """One of our retained records came back from the broker: it is durable."""
        job_id = self._log.on_echo(topic)
        if job_id in self._closing:
            self._durable.add(job_id)

    def tick(self, now: float) -> None:
        """Wake backed-off tasks, time out attempts, fail long-blocked tasks, send due acknowledgements,
        publish again records that never came back."""
        if self._outbox.tick(now):
            self._count("records_republished", self._log.republish_overdue(now))
        while self._delayed and self._delayed[0][0] <= now:
            _, task_id = heapq.heappop(self._delayed)
            rec = self.tasks.get(task_id)
            if rec is not None and rec.state == "queued" and rec.not_before is not None:
                rec.not_before = None
                self._push_ready(rec)
        while self._deadlines and self._deadlines[0][0] <= now:
            _, task_id, attempt = heapq.heappop(self._deadlines)
            rec = self.tasks.get(task_id)
            if rec is not None and rec.state == "running" and rec.attempt == attempt:
                self._effects.append(self._cancel_effect(rec))
                self._failed_attempt(rec, "timeout", f"no result within {rec.spec.timeout}s", now, None)
        for task_id in sorted(self._blocked):
            rec = self.tasks[task_id]
            limit = rec.spec.pending_timeout or self._config.pending_timeout
            if rec.blocked_since is not None and now - rec.blocked_since >= limit:
                self._blocked.discard(task_id)
                self._finish(rec, "failed", now, error=f"unschedulable for {limit:g}s: {rec.reason}")
        for res_id in self.reservations.expired(now):
            self._end_reservation(res_id, "expired", now)
        ledger = self._quota_gate.ledger(now)
        if ledger is not None:
            self._effects.append(Publish(topics.QUOTA_LEDGER, ledger, epoch=self.epoch, retain=True))

    def dispatch(self, now: float) -> None:
        """Place ready tasks on open members, highest priority first."""
        if now < self._dispatch_after or not (self._ready or self._blocked):
            return
        if self._roster.changed:
            self._roster.changed = False
            self._recheck_blocked()
        if self.reservations:
            # Held slots follow the reserving runs' tasks, which may have ended without running.
            self._refresh_loads(self.reservations.nodes())
            self._place_reserved(now)
        deferred: list[ReadyEntry] = []
        while self._ready and self._roster.has_room and len(deferred) < 64:
            item = heapq.heappop(self._ready)
            rec = self._startable(item[2])
            if rec is None:
                continue
            owner = self.jobs[rec.job_id].spec
            over = self._quota_gate.start_refusal(owner, rec.spec.requirements, now)
            if over is not None:
                rec.reason = str(over)
                self._quota_gate.hold_back(owner, item)
                continue
            avoid = self._avoid(rec)
            if rec.spec.requirements.preempt and self._preempt_for(rec, avoid, now):
                continue
            target = self._roster.place(rec.spec.requirements, avoid)
            if target is None:
                why = unmet_by_all(rec.spec.requirements, self._roster.candidates(), avoid)
                if why is None:
                    deferred.append(item)
                else:
                    self._block(rec, why, now)
                continue
            self._assign(rec, target, now)
        for item in deferred:
            heapq.heappush(self._ready, item)
        if self._ready and self._preempting and not self._roster.has_room:
            self._preempt_pass(now)

    def _place_reserved(self, now: float) -> None:
        """Start the queued tasks of reserving runs on their members, in the slots held for them."""
        for res in self.reservations.claimed():
            for node, task_ids in res.tasks.items():
                c = self._roster.member(node)
                if c is None:
                    continue
                for task_id in task_ids:
                    rec = self._startable(task_id)
                    if rec is None:
                        continue
                    req = rec.spec.requirements
                    if c.exclusive_held or c.held >= c.limit or (req.exclusive and c.held):
                        break
                    if self._quota_gate.start_refusal(self.jobs[rec.job_id].spec, req, now):
                        continue
                    if unmet(req, node, c.heartbeat, self._avoid(rec)) is None:
                        self._assign(rec, c, now)

    def _startable(self, task_id: str) -> TaskRecord | None:
        """The task, if it is queued and neither backing off nor blocked."""
        rec = self.tasks.get(task_id)
        if rec is None or rec.state != "queued" or rec.not_before is not None or task_id in self._blocked:
            return None
        return rec

    def _avoid(self, rec: TaskRecord) -> dict[str, str] | None:
        """Anti-affinity: the members where the tasks `rec` avoids run or last ran -> those tasks."""
        names = rec.spec.requirements.avoid
        if not names:
            return None
        out: dict[str, str] = {}
        for task_id in names:
            other = self.tasks.get(task_id)
            if other is not None and other.node is not None and other.job_id == rec.job_id:
                out.setdefault(other.node, task_id)
        return out

    def _preempt_pass(self, now: float) -> None:
        """No member is open: the most urgent ready tasks that may preempt try to."""
        for item in most_urgent(self._ready):
            rec = self._startable(item[2])
            if rec is None or not rec.spec.requirements.preempt:
                continue
            if self._quota_gate.start_refusal(self.jobs[rec.job_id].spec, rec.spec.requirements, now):
                continue
            avoid = self._avoid(rec)
            if unmet_by_all(rec.spec.requirements, self._roster.candidates(), avoid) is None:
                self._preempt_for(rec, avoid, now)

    def _preempt_for(self, rec: TaskRecord, avoid: dict[str, str] | None, now: float) -> bool:
        """Start `rec` at once, in a free execution slot or in the place of an attempt of lower priority;
        whether it was placed (its ready entry is then skipped as stale). When neither is possible it is
        placed like any task (and may wait in a member's queue)."""
        candidates = self._roster.candidates()
        placed = self._preemption.place(rec, avoid, candidates, self._held, self.tasks, self._exclusive)
        if placed is None:
            return False
        target, victim = placed
        if victim is not None:
            self._preempt(victim, rec, now)
        self._assign(rec, target, now)
        return True

    def _preempt(self, victim: TaskRecord, by: TaskRecord, now: float) -> None:
        """Cancel `victim`'s attempt and requeue it without spending one of its retries."""
        self._effects.append(self._cancel_effect(victim))
        self._release(victim)
        self._free_attempts[victim.task_id] = self._free_attempts.get(victim.task_id, 0) + 1
        self._preemption.preempted(victim)
        victim.reason = (
            f"attempt {victim.attempt} preempted by {by.task_id} (priority {PRIORITIES[by.spec.priority]})"
        )
        victim.move("queued", now, victim.reason)
        self._note_spent(victim)
        self._count("preemptions")
        self._push_ready(victim)

    def _load(self, node_id: str) -> tuple[int, bool, int]:
        """How many attempts the member holds, whether one of them wants the device to itself, and how
        many of its slots reservations hold."""
        reserved = self.reservations.held(node_id, self._state_of) if self.reservations else 0
        return len(self._held.get(node_id, ())), self._exclusive.get(node_id, 0) > 0, reserved

    def _state_of(self, task_id: str) -> str | None:
        rec = self.tasks.get(task_id)
        return None if rec is None else rec.state

    def _recheck_blocked(self) -> None:
        """Members came or changed: a blocked task may have found its device."""
        candidates = self._roster.candidates()
        for task_id in sorted(self._blocked):
            rec = self.tasks[task_id]
            why = unmet_by_all(rec.spec.requirements, candidates, self._avoid(rec))
            if why is None:
                self._blocked.discard(task_id)
                rec.blocked_since = None
                rec.reason = None
                self._push_ready(rec)
            else:
                rec.reason = why

    def _assign(self, rec: TaskRecord, target: Candidate, now: float) -> None:
        rec.attempt += 1
        rec.node = target.node_id
        rec.reason = None
        rec.move("running", now, f"assigned to {target.node_id}")
        self._hold(rec, target.node_id, now)
        job = self.jobs[rec.job_id]
        committed = job.committed
        payload = piped_payload(rec.spec, committed)
        if rec.spec.inflows:
            # How to make again an input whose data dies with its member (`swarm.workflow.lineage`).
            upstream = {t: self.tasks[t].spec for t in rec.spec.after if t in self.tasks}
            made = recipes(rec.spec, upstream, committed, lambda spec: piped_payload(spec, committed))
            if made:
                payload = {**payload, "lineage": made}
        if job.spec.kind == "dag":
            started = Started(rec.task_id, rec.attempt, target.node_id)
            self._started.setdefault(rec.job_id, []).append(started)
        # It goes out in the next drain's Assign to that node.
        rec.assign_seq = self._outbox.assign(
            target.node_id,
            Assignment(
                rec.task_id,
                rec.job_id,
                rec.attempt,
                rec.spec.type,
                payload,
                rec.spec.timeout,
                rec.spec.requirements.network,
                job.spec.submitted_by,
            ),
        )

    def _hold(self, rec: TaskRecord, node: str, now: float) -> None:
        rec.assigned_at = now
        timeout = rec.spec.timeout
        if timeout is not None:
            deadline = now + timeout + self._config.failure_timeout
            heapq.heappush(self._deadlines, (deadline, rec.task_id, rec.attempt))
        self._held.setdefault(node, set()).add(rec.task_id)
        self._quota_gate.started(rec.task_id, self.jobs[rec.job_id].spec, rec.spec.requirements)
        if rec.spec.requirements.exclusive:
            self._exclusive[node] = self._exclusive.get(node, 0) + 1
        self._touched.add(rec.task_id)
        self._roster.set_load(node, *self._load(node))

    def _release(self, rec: TaskRecord) -> None:
        node = rec.node or ""
        self._unthrottle(rec)
        held = self._held.get(node)
        if held is not None and rec.task_id in held:
            held.discard(rec.task_id)
            if rec.spec.requirements.exclusive:
                self._exclusive[node] -= 1
            self._touched.add(rec.task_id)
            self._roster.set_load(node, *self._load(node))

    def set_quotas(self, quotas: Iterable[Quota]) -> None:
        """The cluster's quotas changed: apply them to what runs now, and try every held-back task again."""
        for item in self._quota_gate.set_quotas(quotas):
            heapq.heappush(self._ready, item)

    def _unthrottle(self, rec: TaskRecord) -> None:
        """`rec` stopped running: its owner's quota has room again for the tasks held back."""
        for item in self._quota_gate.finished(rec.task_id, self.jobs[rec.job_id].spec):
            heapq.heappush(self._ready, item)

    def _block(self, rec: TaskRecord, why: str, now: float) -> None:
        rec.reason = why
        rec.blocked_since = now
        self._blocked.add(rec.task_id)

    # --- state changes ------------------------------------------------------------------------------

    def _failed_attempt(
        self,
        rec: TaskRecord,
        kind: str,
        error: str,
        now: float,
        retry_after: float | None,
        release: bool = True,
    ) -> None:
        if release:
            self._release(rec)
        # Preempted attempts, and ones lost with a member that came back, were not the task's fault.
        counted = rec.attempt - self._free_attempts.get(rec.task_id, 0)
        if should_retry(rec.spec.retry, kind, counted):
            delay = backoff_delay(rec.spec.retry, counted, self._rng, retry_after)
            rec.reason = f"attempt {rec.attempt} {kind}: {error.splitlines()[-1] if error else kind}"
            rec.move("queued", now, rec.reason)
            self._note_spent(rec)
            self._count("retries")
            if delay > 0:
                rec.not_before = now + delay
                heapq.heappush(self._delayed, (rec.not_before, rec.task_id))
            else:
                self._push_ready(rec)
        else:
            self._finish(rec, "failed", now, error=f"{kind}: {error}")

    def _refused(self, rec: TaskRecord, node: str, error: str, now: float) -> None:
        """The device's owner forbids this task there: try it elsewhere, never there again."""
        req = rec.spec.requirements
        rec.spec = replace(rec.spec, requirements=replace(req, exclude=(*req.exclude, node)))
        rec.reason = f"refused by {node}: {error.splitlines()[-1] if error else 'refused'}"
        rec.move("queued", now, rec.reason)
        self._push_ready(rec)

    def _finish(
        self,
        rec: TaskRecord,
        state: TaskState,
        now: float,
        result: Any = None,
        error: str | None = None,
        started: float = 0.0,
        finished: float = 0.0,
    ) -> None:
        if rec.state == "running":
            self._release(rec)
            if state == "cancelled" and rec.node is not None:
                self._effects.append(self._cancel_effect(rec))
        elif rec.state == "queued":
            self._unqueue(rec)
        rec.move(state, now, error or "ok")
        self._touched.add(rec.task_id)
        job = self.jobs[rec.job_id]
        update = TaskUpdate(rec.task_id, state, rec.attempt, rec.node, result, error, started, finished)
        if not self._log.commit(job, update):
            raise AssertionError(f"task {rec.task_id} committed twice: {list(rec.story)}")
        self._count(f"tasks_{state}")
        for dep_id in rec.dependents:
            dep = job.tasks[dep_id]
            if dep.state != "waiting":
                continue
            if dep.spec.inflows:
                dep.waiting_on.discard(rec.task_id)
                if not dep.waiting_on:
                    self._gate(dep, job, now)
            elif state == "done":
                dep.waiting_on.discard(rec.task_id)
                if not dep.waiting_on:
                    self._enqueue(dep, now, f"{rec.task_id} done")
            else:
                self._finish(
                    dep,
                    "cancelled" if state == "cancelled" else "failed",
                    now,
                    error=f"dependency {rec.task_id} {state}",
                )
        if job.finished:
            self._finished_jobs.add(rec.job_id)

    def _gate(self, rec: TaskRecord, job: JobRecord, now: float) -> None:
        """Every predecessor of a workflow step is final: run it, skip it or fail it by its edges."""
        verdict, why = decide(rec.spec, job.committed)
        if verdict == "run":
            self._enqueue(rec, now, why)
        else:
            self._finish(rec, verdict, now, error=why)

    def _close(self, job: JobRecord, now: float) -> None:
        """Publish the final record of a finished job whose commits are durable; forget it here."""
        job_id = job.spec.job_id
        self._closing.discard(job_id)
        # The spec stays retained until the records expire (`replica.py` says why).
        self._log.close(job, now)
        for task_id in job.tasks:
            self._recent.append(self.tasks.pop(task_id).summary())
            self._free_attempts.pop(task_id, None)
            self._preemption.forget(task_id)
        del self.jobs[job_id]
        self._preempting.discard(job_id)
        self._closed.append(job_id)
        self._count("jobs_finished")
        res = self.reservations.of_run(job_id)
        if res is not None:
            self._end_reservation(res.res_id, f"its run {job_id} ended", now)

    def _enqueue(self, rec: TaskRecord, now: float, why: str) -> None:
        rec.move("queued", now, why)
        self._push_ready(rec)

    def _push_ready(self, rec: TaskRecord) -> None:
        self._seq += 1
        heapq.heappush(self._ready, (rec.spec.priority, self._seq, rec.task_id))

    def _unqueue(self, rec: TaskRecord) -> None:
        # Entries left in the heaps are skipped lazily once the task is no longer queued.
        self._blocked.discard(rec.task_id)
        rec.not_before = None

    def _cancel_effect(self, rec: TaskRecord) -> Publish:
        assert rec.node is not None, "only a running attempt is cancelled on its node"
        return Publish(topics.inbox(rec.node), CancelAttempt(rec.task_id, rec.attempt), epoch=self.epoch)

    def _publish_event(self, job_id: str, body: JobAccepted | JobRejected) -> None:
        self._effects.append(Publish(topics.job_events(job_id), body, epoch=self.epoch))

    def _note_spent(self, rec: TaskRecord) -> None:
        """`rec` will be tried again: its attempts so far go into the job log with the next commits."""
        spent = AttemptsSpent(rec.task_id, rec.attempt, self._free_attempts.get(rec.task_id, 0))
        self._log.note_spent(self.jobs[rec.job_id], spent)

    def _count(self, name: str, n: int = 1) -> None:
        if n:
            self.metrics[name] = self.metrics.get(name, 0) + n

    def republish(self) -> None:
        """The broker may have lost its retained records (a new broker): publish the spec and all the
        commits of every active job again, and every reservation's spec."""
        for res in self.reservations.all():
            spec = Publish(topics.job_spec(res.res_id), res.spec, epoch=self.epoch, retain=True)
            self._effects.append(spec)
        for job in self.jobs.values():
            self._effects.append(
                Publish(topics.job_spec(job.spec.job_id), job.spec, epoch=self.epoch, retain=True)
            )
            self._log.publish_again(job)
            for rec in job.tasks.values():
                if rec.attempt and rec.task_id not in job.committed:
                    self._note_spent(rec)

    # --- output -------------------------------------------------------------------------------------

    def take_local(self) -> Assign | None:
        """The last drain's assignments and acknowledgements for this node's own worker, which gets them
        in memory instead of through the broker."""
        return self._outbox.take_local()

    def take_closed(self) -> list[str]:
        """Jobs whose final record the drains since the last call published."""
        closed, self._closed = self._closed, []
        return closed

    def drain(self, now: float) -> list[Effect]:
        """Everything this scheduler wants done, with assignments and commits batched per destination
        (but for this node's own, kept for `take_local`)."""
        for job_id in sorted(self._finished_jobs):
            job = self.jobs.get(job_id)
            if job is not None and job.finished:
                self._outbox.ack(self._log.finish(job, now))
                self._closing.add(job_id)
                if self._log.durable(job_id):  # every commit came back before the job ended
                    self._durable.add(job_id)
        self._finished_jobs.clear()
        # Closed as soon as their commits are durable, not on the next tick: a tick that closed the
        # 25 one-task jobs of the last 50 ms at once held the next task's start up to 6 ms. Only the
        # jobs an echo completed are looked at: while the broker is slow to echo, thousands may wait.
        for job_id in sorted(self._durable):
            if job_id in self._closing:
                self._close(self.jobs[job_id], now)
        self._durable.clear()
        self._outbox.ack(self._log.flush(self.jobs, now))
        # Assignments first: a task's start should not wait behind its job's acknowledgement.
        effects = self._outbox.drain()
        effects.extend(self._effects)
        effects.extend(self._log.drain())
        # A workflow run's steps are shown running as they start (one event per job per drain).
        effects.extend(
            Publish(topics.job_events(job_id), TasksStarted(job_id, tuple(started)), epoch=self.epoch)
            for job_id, started in self._started.items()
        )
        self._effects = []
        self._started = {}
        return effects

    def validate(self, everything: bool = False) -> None:
        """Invariants: a held attempt is running on its node and nowhere else held; a committed task is in
        its committed state; a job with anything to publish is one a drain looks at. Checks the tasks
        touched since the last call, or `everything`."""
        if everything:
            self._log.check(self.jobs)
        touched, self._touched = (set(self.tasks) if everything else self._touched), set()
        for task_id in touched:
            rec = self.tasks.get(task_id)
            if rec is None:
                continue  # its job closed
            holders = [node for node, held in self._held.items() if task_id in held] if everything else []
            if rec.state == "running":
                assert task_id in self._held.get(rec.node or "", ()), list(rec.story)
            else:
                assert task_id not in self._held.get(rec.node or "", ()), list(rec.story)
            assert len(holders) <= 1, (task_id, holders)
            update = self.jobs[rec.job_id].committed.get(task_id)
            assert update is None or update.state == rec.state, list(rec.story)
