"""One node's whole protocol: membership, election, replica, worker and (when acting) the scheduler.

Theory of operation
-------------------
`handle(event, now)` is the single entry point. Messages pass one gate first: coordinator traffic
(assignments, cancellations, job states) stamped with an epoch below the highest this node has seen is
dropped and counted, because it comes from a deposed coordinator. Commit records are not gated: the
replica keeps each task's record of the highest epoch (`replica.py` says why). Then each message goes to the
machine that owns it. After every batch of events the scheduler (if this node acts) places ready tasks,
and the effects of all machines are collected, assignments and results batched per destination.

Following the coordinator's records and succeeding it are `succession.py`'s rules; this module
applies them as the election moves: subscribing, taking over, being deposed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from swarm import topics
from swarm.core.admission import TaskValidator
from swarm.core.config import CoreConfig
from swarm.core.election import Election, claim_message
from swarm.core.epochs import MAX_EPOCH_STEP, claim_in_reach
from swarm.core.events import (
    ClearRetained,
    Connected,
    DropJobData,
    Effect,
    Event,
    Leave,
    MessageReceived,
    PersistFailed,
    PolicyChanged,
    Publish,
    RetainedCleared,
    Subscribe,
    TaskFinished,
    Tick,
    Unsubscribe,
)
from swarm.core.membership import Member, Membership, paced_interval
from swarm.core.quota import Quota
from swarm.core.replica import Replica
from swarm.core.retry import Rng
from swarm.core.scheduler import Scheduler
from swarm.core.story import STORY_SIZE, Story, StoryEntry
from swarm.core.succession import (
    NODE_SUBSCRIPTIONS,
    announcement,
    choose_standbys,
    followed,
    may_claim,
    succession_rank,
    take_over,
)
from swarm.core.worker import REPORT_EVERY, Worker
from swarm.devices.capabilities import Capabilities
from swarm.messages import (
    Amend,
    Assign,
    Cancel,
    CancelAttempt,
    Claim,
    Commit,
    CoordinatorAnnounce,
    Envelope,
    ErrorReply,
    Heartbeat,
    JobState,
    NodeGone,
    QuotaLedger,
    QuotaQuery,
    QuotaReply,
    Results,
    SubmitJob,
    Sync,
    TasksQuery,
    TasksReply,
    WorkerReport,
)

__all__ = ["MAX_BATCH", "DeviceStatus", "NodeMachine"]

#: Most events one step takes (`handle_many`): the shell's batch, and the simulator's largest.
MAX_BATCH = 512
#: Other members' state changes are summed up in one line at most this often (seconds): under churn or
#: overload a line per member per flap on every node was itself a large share of the load.
MEMBER_LOG_EVERY = 10.0

#: Heartbeats whose way back through the broker a node times at once; more are a broker that lost them.
MAX_ECHOES_AWAITED = 32


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """What the shell measured of this device; the next heartbeats carry it."""

    caps: Capabilities
    load: float
    free_memory_mb: int
    broker: str = ""
    api: str = ""


class NodeMachine:
    """The pure protocol of one node."""

    def __init__(
        self,
        node_id: str,
        name: str,
        config: CoreConfig,
        rng: Rng,
        validator: TaskValidator,
        status: DeviceStatus,
        persisted_epoch: int,
        now: float,
        story_size: int = STORY_SIZE,
    ) -> None:
        self.node_id = node_id
        self.name = name
        self.config = config
        self._rng = rng
        self._validator = validator
        self.status = status
        self._story = Story(story_size)
        self.membership = Membership(node_id, config)
        self.election = Election(node_id, config, persisted_epoch, now)
        self.election.on_battery = status.caps.battery_percent is not None
        self.replica = Replica()
        self.worker = Worker(node_id, config)
        self.scheduler: Scheduler | None = None
        self._quotas: tuple[Quota, ...] = ()
        #: The newest quota ledger heard (its epoch and body), which a successor starts its day counts from.
        self._ledger: tuple[int, QuotaLedger] | None = None
        self._next_heartbeat = now
        #: This node's heartbeat interval, paced by the cluster's size (`set_roster_size`).
        self.heartbeat_interval = config.heartbeat_interval
        self._hb_seq = 0
        # When each heartbeat since this node began to follow every heartbeat was sent: its echo tells how
        # late the broker delivers (`Membership.note_echo`). Earlier ones may come back as retained records.
        self._hb_sent: dict[int, float] = {}
        self._following: set[str] = set()
        self._standbys: tuple[str, ...] = ()
        # A fresh process reports to the first coordinator it sees, whatever the epoch: it may have lost
        # attempts an earlier life of this node held.
        self._reported_epoch = -1
        self._next_report = now
        self._syncs = 0
        self._effects: list[Effect] = []
        self._member_changes: dict[str, int] = {}
        self._next_member_log = now
        self.metrics: dict[str, int] = {}
        self.left = False

    # --- entry points -------------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Effect]:
        """Process one event and return every effect it calls for."""
        return self.handle_many((event,), now)

    def handle_many(self, events: Iterable[Event], now: float) -> list[Effect]:
        """Process events in order, then place tasks and batch the output once.

        A step leaves nothing behind for the next one. An event whose handler fails is dropped alone
        (counted, and told in the story with its exception) and its batch goes on; the effects the step
        made, a failed handler's included, leave with this step: the state they stand for has already
        changed, and held back they would only go out later, out of order with what follows.
        """
        for event in events:
            try:
                self._dispatch_event(event, now)
            except Exception as exc:
                self.count("handler_errors")
                what = f"dropped an event that failed in the core: {event!r:.200}"
                self._story.record(now, "error", what, *_cause_ids(event), exc=exc)
        try:
            if not self.left:
                self._follow()
            self._place(now)
        except Exception as exc:
            self.count("handler_errors")
            what = "placing work failed in the core; the step's effects go out as they stand"
            self._story.record(now, "error", what, self.election.epoch, exc=exc)
            while self._collect(now):
                pass
        effects, self._effects = self._effects, []
        return effects

    def _place(self, now: float) -> None:
        # Work the coordinator gives its own worker, and results that worker returns to it, are handed
        # over in memory instead of through the broker; that may free room for more, hence the loop.
        while True:
            if self.scheduler is not None and not self.left:
                self.scheduler.dispatch(now)
            if not self._collect(now):
                return

    def _collect(self, now: float) -> bool:
        """Move the sub-machines' output into the step's effects, handing what stays on this node over in
        memory; returns whether anything was handed over."""
        handed_over = False
        scheduler = None if self.left else self.scheduler
        if scheduler is not None:
            self._effects.extend(scheduler.drain(now))
            for job_id in scheduler.take_closed():
                # Our own final record counts at once, not when the broker echoes it: if that echo is
                # lost, the job's still-retained spec must not be taken for a new submission.
                self.replica.on_finished(job_id, now)
            own = scheduler.take_local()
            if own is not None:
                self.worker.on_assign(own, scheduler.epoch)
            results = self.worker.take_results()
            if results:
                scheduler.on_results(self.node_id, results, now)
            handed_over = own is not None or bool(results)
        self._effects.extend(self.worker.drain(self.election.epoch))
        return handed_over

    def note_loop_lag(self, lag: float, now: float) -> None:
        """The shell measured how late its tick is handled (seconds): how long this node's own loop keeps
        what arrives waiting. The failure detector and the election scale their patience by it."""
        self.membership.note_lag(lag, now)

    def set_roster_size(self, nodes: int) -> None:
        """The cluster's signed roster admits `nodes` nodes: heartbeats and reports are paced by it, and
        members' turns to claim spread by it."""
        self.election.roster_size = nodes
        self.heartbeat_interval = paced_interval(self.config, nodes)

    def set_status(self, status: DeviceStatus) -> None:
        """The shell measured the device again."""
        self.status = status
        self.election.on_battery = status.caps.battery_percent is not None

    def subscriptions(self) -> list[str]:
        """Topics to subscribe to on (re)connect."""
        followed = [topics.inbox(self.node_id), *NODE_SUBSCRIPTIONS, *sorted(self._following)]
        if self.scheduler is not None:
            followed.append(topics.COORD_INBOX)
        return followed

    def story(self, *ids: str | int) -> list[StoryEntry]:
        """What this node's machines noted about any of `ids` (a task, job, member or message id, or an
        epoch), oldest first, of the entries still kept."""
        return self._story.about(*ids)

    def take_story(self) -> tuple[list[StoryEntry], int]:
        """The story entries recorded since the last call, for the shell to log, and how many more were
        pushed out of the buffer before they were taken."""
        return self._story.take_new()

    # --- routing ------------------------------------------------------------------------------------

    def _dispatch_event(self, event: Event, now: float) -> None:
        match event:
            case Tick():
                self._on_tick(now)
            case MessageReceived(topic, env):
                self._on_message(topic, env, now)
            case RetainedCleared(topic):
                self._on_cleared(topic)
            case TaskFinished(result):
                self.worker.on_finished(result, now)
            case Connected():
                self._on_connected(now)
            case Leave():
                self._on_leave()
            case PolicyChanged(quotas):
                self._quotas = quotas
                if self.scheduler is not None:
                    self.scheduler.set_quotas(quotas)
            case PersistFailed(epoch, reason):
                # Counted in the heartbeats (`swarm status`) and said once per failure: an operator must
                # free the disk before this node can coordinate again.
                self.count("persist_failures")
                what = f"could not store epoch {epoch} ({reason}); this node claims no epoch until it can"
                self._story.record(now, "warning", what, epoch)
                self.election.on_persist_failed(epoch)
            case _:
                raise TypeError(f"unknown event {event!r}")

    def _on_message(self, topic: str, env: Envelope, now: float) -> None:
        body = env.body
        if isinstance(body, Assign | CancelAttempt | JobState) and env.epoch < self.election.epoch:
            # Routine (a restart reads every finished job's retained state): counted, not one line each.
            self.count("fenced_messages")
            self._story.record(
                now,
                "debug",
                f"dropped {type(body).TAG} of stale epoch {env.epoch} (now {self.election.epoch})",
                env.msg_id,
                env.sender,
            )
            return
        refusal = self._refusal(topic, env)
        if refusal is not None:
            self.count("refused_messages")
            self._story.record(
                now,
                "warning",
                f"refused {type(body).TAG} from {env.sender} on {topic}: {refusal}",
                env.msg_id,
                env.sender,
            )
            return
        match body:
            case Heartbeat() if self._follows(env.sender):
                self._on_heartbeat(env.sender, body, now)
            case NodeGone(reason) if self._follows(env.sender):
                self.membership.on_gone(env.sender, reason, now)
                self._take_member_changes(now)
                if reason == "left":
                    self.election.forget_coordinator(env.sender)
            case Claim(epoch):
                self.election.on_claim(env.sender, epoch, now)
                self._apply_election(now)
            case CoordinatorAnnounce(epoch, coordinator, standbys):
                self.election.on_announce(epoch, coordinator, standbys)
                self._apply_election(now)
                self._report_to_new_coordinator(now)
            case SubmitJob():
                self.replica.on_spec(body)
                if body.job_id in self.replica.finished:
                    if self.scheduler is not None:
                        self._effects.append(ClearRetained(topics.job_spec(body.job_id)))
                elif self.scheduler is not None:
                    self.scheduler.on_submit(body, now)
            case Commit(job_id, updates, spent):
                self.replica.on_commits(job_id, updates, spent, topic, env.epoch)
                if self.scheduler is not None and env.sender == self.node_id:
                    self.scheduler.on_echo(topic)
            case JobState(job_id, _, finished):
                if self.scheduler is not None and env.sender == self.node_id:
                    self.scheduler.on_echo(topic)
                if finished:
                    self.replica.on_finished(job_id, now)
                    self._effects.append(DropJobData(job_id))
            case Assign():
                self.worker.on_assign(body, env.epoch)
            case CancelAttempt(task_id, attempt):
                self.worker.on_cancel(task_id, attempt)
            case Results() | WorkerReport() | Cancel() | Amend() | TasksQuery() | QuotaQuery():
                self._on_coordinator_message(env, now)
            case Sync(ref) if env.sender == self.node_id:
                self._on_synced(ref, now)
            case QuotaLedger() if self._ledger is None or env.epoch >= self._ledger[0]:
                self._ledger = (env.epoch, body)
        # Anything else (replies and job events meant for clients) is nothing for a node to do.

    def _on_heartbeat(self, sender: str, body: Heartbeat, now: float) -> None:
        if sender == self.node_id and body.seq in self._hb_sent:
            self.membership.note_echo(now - self._hb_sent.pop(body.seq), now)
        self.membership.on_heartbeat(sender, body, now)
        changed = self._take_member_changes(now)
        if self.scheduler is not None and not changed:
            self.scheduler.on_member(self.membership.members[sender], now)

    def _refusal(self, topic: str, env: Envelope) -> str | None:
        """Why `env` may not have come from its (authenticated) sender on `topic`, or None.

        The signature proved who sent it; this checks what depends on protocol state: a member's
        heartbeat on its own topic only, coordinator traffic from the coordinator of the current epoch
        only, a claim no more than `MAX_EPOCH_STEP` ahead, records on the topic of their own job.
        """
        body, sender, election = env.body, env.sender, self.election
        match body:
            case Heartbeat() | NodeGone():
                return None if topic == topics.heartbeat(sender) else "not on the sender's heartbeat topic"
            case Claim(epoch) if not claim_in_reach(epoch, election.epoch):
                return f"claims epoch {epoch}, more than {MAX_EPOCH_STEP} past {election.epoch}"
            case CoordinatorAnnounce(_, coordinator) if coordinator != sender or topic != topics.COORD:
                return f"announces {coordinator} as coordinator"
            case Assign() | CancelAttempt():
                if topic != topics.inbox(self.node_id):
                    return "not on this node's inbox"
                if sender != election.coordinator or env.epoch != election.epoch:
                    return f"not from the coordinator of epoch {election.epoch} ({election.coordinator})"
            case Commit(job_id) | JobState(job_id):
                leaf = "commits" if isinstance(body, Commit) else "state"
                if topics.job_of(topic) != (job_id, leaf):
                    return f"a record of job {job_id} off its {leaf} topic"
                if env.epoch == election.epoch and election.coordinator not in (None, sender):
                    return f"not from the coordinator of epoch {election.epoch}"
            case SubmitJob(job_id) if topic != topics.job_spec(job_id):
                return f"the spec of job {job_id} on another topic"
            case QuotaLedger():
                if topic != topics.QUOTA_LEDGER:
                    return "a quota ledger off its topic"
                if env.epoch == election.epoch and election.coordinator not in (None, sender):
                    return f"not from the coordinator of epoch {election.epoch}"
            case Results() | WorkerReport() | Cancel() | Amend() | TasksQuery() | QuotaQuery() if (
                topic != topics.COORD_INBOX
            ):
                return "a coordinator request off coord/in"
            case Sync() if sender != self.node_id:
                return "a sync from another node"
        return None

    def _on_coordinator_message(self, env: Envelope, now: float) -> None:
        scheduler = self.scheduler
        if scheduler is None:
            self.count("misdirected_messages")
            return
        match env.body:
            case Results(results):
                scheduler.on_results(env.sender, results, now)
            case WorkerReport():
                scheduler.on_worker_report(env.sender, env.body, now)
            case Cancel(target, by, role):
                refusal = scheduler.on_cancel(target, by, role, now)
                if refusal is not None:
                    self._reply(env, ErrorReply(env.msg_id, refusal))
            case Amend():
                refusal = scheduler.on_amend(env.body, now)
                if refusal is not None:
                    what = f"refused to amend job {env.body.job_id}: {refusal}"
                    self._story.record(now, "warning", what, env.body.job_id, env.msg_id)
                    self._reply(env, ErrorReply(env.msg_id, refusal))
            case TasksQuery(limit, job_id):
                self._reply(env, scheduler.on_tasks_query(limit, job_id, env.msg_id))
            case QuotaQuery(scope_kind, scope):
                lines = tuple(scheduler.quotas.usage(scope_kind, scope, now))
                self._reply(env, QuotaReply(lines, env.msg_id))
            case _:
                raise TypeError(f"not a coordinator message: {env.body!r}")

    def _on_cleared(self, topic: str) -> None:
        match topics.job_of(topic):
            case (job_id, "spec"):
                self.replica.on_spec_cleared(job_id)
            case (job_id, "state"):
                self.replica.on_state_cleared(job_id)
            case _:
                pass

    def _on_tick(self, now: float) -> None:
        self.membership.tick(now)
        self._take_member_changes(now)
        patience = self.membership.patience
        self.election.tick(now, self.membership.state_of, may_claim(self._following), patience)
        self._apply_election(now)
        if now >= self._next_heartbeat and not self.left:
            self._next_heartbeat = now + self.heartbeat_interval
            self._effects.append(self._heartbeat(now))
        self.worker.tick(now)
        if now >= self._next_report and self.election.coordinator not in (None, self.node_id):
            self._report(now)
        if self._member_changes and now >= self._next_member_log:
            self._log_member_changes(now)
        forgotten = self.membership.take_forgotten()
        if self.scheduler is not None:
            self.scheduler.tick(now)
            # Retained records nobody needs any more: old jobs' specs and results (the state record last:
            # while it stands, the job is known finished), long-dead members' wills.
            for job_id, records in self.replica.expired(now, self.config.finished_job_retention):
                self._effects.extend(ClearRetained(topic) for topic in records)
                self._effects.append(ClearRetained(topics.job_state(job_id)))
            self._effects.extend(ClearRetained(topics.heartbeat(node_id)) for node_id in forgotten)

    def _on_connected(self, now: float) -> None:
        """Say again what a fresh broker would not know: who we are, and what we coordinate or hold."""
        self._next_heartbeat = now
        if self.scheduler is not None:
            # Not at once: we may have been deposed while away, and our claim would then replace the
            # successor's as the retained record. The retained records reach us before our own Sync does.
            self._syncs += 1
            ref = f"{self.node_id}.{self._syncs}"
            self._effects.append(Publish(topics.inbox(self.node_id), Sync(ref), epoch=self.election.epoch))
        elif self.election.coordinator is not None:
            # Results published while the connection was down were lost: the coordinator takes them
            # (and what we hold) again, idempotently.
            self._report(now)

    def _on_synced(self, ref: str, now: float) -> None:
        """Still acting once the retained records came: restate what a fresh broker may have lost."""
        scheduler = self.scheduler
        if scheduler is None or ref != f"{self.node_id}.{self._syncs}":
            return
        epoch = scheduler.epoch
        self._effects.append(claim_message(epoch))
        self._effects.append(self._announcement(epoch))
        scheduler.republish()
        # A fresh broker may still hold specs of jobs we finished: they must not run again.
        self._effects.extend(
            ClearRetained(topics.job_spec(job_id)) for job_id in self.replica.finished_since(now - 600.0)
        )

    def _on_leave(self) -> None:
        self.left = True
        self.worker.hand_back()
        if self.scheduler is not None:
            self.scheduler = None
            self._effects.append(Unsubscribe(topics.COORD_INBOX))
        self._effects.append(
            Publish(topics.heartbeat(self.node_id), NodeGone("left"), epoch=self.election.epoch, retain=True)
        )

    # --- helpers ------------------------------------------------------------------------------------

    def _apply_election(self, now: float) -> None:
        """Take the election's effects, and start or stop acting as it says."""
        effects = self.election.drain()
        self._effects.extend(effects)
        for effect in effects:
            if isinstance(effect, Publish) and isinstance(effect.body, Claim):
                # Rare (one per election, per claimant) and what a slow failover is read from.
                what = f"claiming epoch {effect.body.epoch} (patience {self.membership.patience:.1f})"
                self._story.record(now, "info", what, effect.body.epoch)
        transition = self.election.take_transition()
        if transition is None:
            return
        if transition.deposed and self.scheduler is not None:
            deposed = self.scheduler.epoch
            self._story.record(now, "warning", f"deposed as coordinator of epoch {deposed}", deposed)
            self.scheduler = None
            self._effects.append(Unsubscribe(topics.COORD_INBOX))
        if transition.elected is not None:
            self._become_coordinator(transition.elected, now)

    def _become_coordinator(self, epoch: int, now: float) -> None:
        active = self.replica.active()
        grace = self.config.takeover_grace if active else 0.0
        scheduler = Scheduler(
            self.node_id,
            epoch,
            self.config,
            self._rng,
            self._validator,
            now + grace,
            self._quotas,
            story=self._story,
        )
        ledger = None if self._ledger is None else self._ledger[1]
        take_over(scheduler, active, self.membership.members.values(), ledger, now)
        self.scheduler = scheduler
        self._standbys = self._choose_standbys()
        what = f"acting as coordinator of epoch {epoch}, {len(active)} active job(s) adopted"
        self._story.record(now, "info", what, epoch)
        # Subscribe before announcing: workers report to `coord/in` as soon as they see the announcement.
        self._effects.append(Subscribe(topics.COORD_INBOX))
        self._effects.append(self._announcement(epoch))

    def _announcement(self, epoch: int) -> Publish:
        return announcement(epoch, self.node_id, self._standbys)

    def _choose_standbys(self) -> tuple[str, ...]:
        return choose_standbys(self.membership.members.values(), self.node_id, self.config.standbys)

    def _follows(self, node_id: str) -> bool:
        return topics.EVERY_HEARTBEAT in self._following or node_id == self.election.coordinator

    def _follow(self) -> None:
        """Subscribe to what this node's part requires now, and drop what it no longer does."""
        wanted = followed(self.election, self.node_id)
        if wanted == self._following:
            return
        self._effects.extend(Unsubscribe(t) for t in sorted(self._following - wanted))
        self._effects.extend(Subscribe(t) for t in sorted(wanted - self._following))
        # What is no longer followed would only go stale: a later claim starts again from retained records.
        if topics.EVERY_HEARTBEAT in self._following - wanted:
            self.membership.keep_only(self.election.coordinator)
            self._hb_sent.clear()
        if topics.JOB_LOG in self._following - wanted:
            self.replica.forget_log()
        self._following = wanted

    def succession_rank(self) -> int:
        """This node's place in line to take over (0 first): the coordinator, its standbys, then the
        members this node knows alive, by id."""
        return succession_rank(
            self.election, self.membership.alive_ids(), self.node_id, self.membership.state_of
        )

    def _report_to_new_coordinator(self, now: float) -> None:
        epoch = self.election.epoch
        if epoch > self._reported_epoch and self.election.coordinator is not None:
            self._reported_epoch = epoch
            self._report(now)

    def _report(self, now: float) -> None:
        self._next_report = now + REPORT_EVERY * self.heartbeat_interval
        self.worker.report(self.election.epoch)

    def _log_member_changes(self, now: float) -> None:
        """One line for every change since the last: "members: 12 suspect, 3 alive (97 of 100 alive)"."""
        changes = ", ".join(f"{n} {state}" for state, n in sorted(self._member_changes.items()))
        alive = sum(m.state == "alive" for m in self.membership.members.values())
        # No ids: it sums up many members' changes, and their own entries name them.
        what = f"members: {changes} ({alive} of {len(self.membership.members)} alive)"
        self._story.record(now, "info", what)
        self._member_changes = {}
        self._next_member_log = now + MEMBER_LOG_EVERY

    def _take_member_changes(self, now: float) -> list[Member]:
        """Tell the scheduler (and the log) of the members whose state changed; returns them."""
        changed = self.membership.take_changes()
        scheduler = self.scheduler
        for member in changed:
            self._story.record(now, "debug", f"member {member.node_id} is {member.state}", member.node_id)
            self._member_changes[member.state] = self._member_changes.get(member.state, 0) + 1
            if member.node_id == self.election.coordinator and member.state != "alive":
                what = f"coordinator {member.node_id} is {member.state}"
                self._story.record(now, "info", what, member.node_id)
            if scheduler is not None:
                scheduler.on_member(member, now)
        if changed and scheduler is not None:
            standbys = self._choose_standbys()
            if standbys != self._standbys:
                self._standbys = standbys
                self._effects.append(self._announcement(scheduler.epoch))
        return changed

    def _heartbeat(self, now: float) -> Publish:
        self._hb_seq += 1
        if topics.EVERY_HEARTBEAT in self._following:
            self._hb_sent[self._hb_seq] = now
            if len(self._hb_sent) > MAX_ECHOES_AWAITED:
                del self._hb_sent[next(iter(self._hb_sent))]
        s = self.status
        hb = Heartbeat(
            name=self.name,
            caps=s.caps,
            slots=self.config.slots,
            running=len(self.worker.running),
            load=s.load,
            free_memory_mb=s.free_memory_mb,
            seq=self._hb_seq,
            broker=s.broker,
            api=s.api,
            counters=self.counters(),
            patience=self.membership.patience,
            interval=self.heartbeat_interval,
        )
        return Publish(topics.heartbeat(self.node_id), hb, epoch=self.election.epoch, retain=True, lossy=True)

    def _reply(self, env: Envelope, body: ErrorReply | TasksReply | QuotaReply) -> None:
        self._effects.append(Publish(topics.inbox(env.sender), body, epoch=self.election.epoch))

    def count(self, name: str) -> None:
        """Add one to a counter; counters travel with the heartbeats (`swarm status --json`)."""
        self.metrics[name] = self.metrics.get(name, 0) + 1

    def counters(self) -> dict[str, int]:
        """Every machine's counters, merged."""
        merged = dict(self.metrics)
        for extra in (self.worker.metrics, self.scheduler.metrics if self.scheduler else {}):
            for key, value in extra.items():
                merged[key] = merged.get(key, 0) + value
        return merged

    def validate(self) -> None:
        """Check the invariants of the machines a step can break; the simulator calls this after every step.

        `Membership.validate` scans every member and guards only bookkeeping, so it runs in its tests.
        """
        self.election.validate()
        self.worker.validate()
        if self.scheduler is not None:
            assert self.election.acting_epoch == self.scheduler.epoch, "scheduler outlived its epoch"
            self.scheduler.validate()


def _cause_ids(event: Event) -> tuple[str | int, ...]:
    """The ids an event names, for the story entry of a handler that failed on it."""
    match event:
        case MessageReceived(_, env):
            return (env.msg_id, env.sender)
        case TaskFinished(result):
            return (result.task_id, result.job_id)
        case PersistFailed(epoch, _):
            return (epoch,)
        case _:
            return ()
