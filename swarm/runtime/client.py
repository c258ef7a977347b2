"""The submitter's side: submit jobs and follow them, list members and tasks, cancel.

A submission is durable the moment the broker holds its retained spec; the client still waits for a
coordinator's `JobAccepted` and republishes the spec (same job id, so never run twice) until one
accepts, which keeps `swarm submit --wait` working while a coordinator is being replaced. Commits are
counted through `JobTracker`, with the same epoch gate as every member.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Self

from swarm import topics
from swarm.codec import encode
from swarm.core.tracker import JobProgress, JobTracker
from swarm.errors import ProtocolError, SwarmError
from swarm.ids import check_id, is_id
from swarm.messages import (
    Body,
    Cancel,
    CoordinatorAnnounce,
    Envelope,
    ErrorReply,
    Heartbeat,
    JobState,
    NodeGone,
    QuotaLine,
    QuotaQuery,
    QuotaReply,
    SubmitJob,
    TasksQuery,
    TasksReply,
    TaskSummary,
    TaskUpdate,
)
from swarm.runtime.mqtt import BrokerLogin, Transport
from swarm.trust.credentials import Credential
from swarm.trust.pairing import Pairing
from swarm.trust.roles import may_send, permission_refusal
from swarm.trust.signing import Signer, Verifier, signatures_disabled

__all__ = ["MemberView", "SwarmClient"]

ACK_TIMEOUT = 2.0
#: The longest wait between resends of a spec no coordinator has accepted yet. Each resend is decoded and
#: checked by every member: a 3,000-task spec (1.6 MB) resent every 2 s kept 50 nodes on two cores busy
#: with nothing else while they elected a coordinator, so resends back off from ACK_TIMEOUT to this.
RESEND_CAP = 60.0
#: The longest interval `swarm status` waits for a member to send a live heartbeat, whatever it states.
MAX_LIVE_BEAT_WAIT_S = 10.0
#: How long `watch_members` listens at least: the retained heartbeats come right after the subscription;
#: this leaves a slow broker or link time to deliver them all before a member looks missing.
SETTLE_S = 0.5
#: `member_slots`: how long it waits at most for the members' retained heartbeats, and the pause that
#: brings no new member once they have come.
SLOTS_WAIT_S = 0.5
QUIET_S = 0.01
#: The task count of a job followed without knowing its spec: it never looks finished.
_UNBOUNDED = 1 << 30


@dataclass(slots=True)
class MemberView:
    """A member as `swarm status` shows it."""

    node_id: str
    heartbeat: Heartbeat | None
    beats: int = 0
    gone: str | None = None

    @property
    def state(self) -> str:
        """alive (heard live), suspect (only a retained record), or dead (its will or goodbye)."""
        if self.gone is not None:
            return "dead"
        return "alive" if self.beats >= 2 else "suspect"


class SwarmClient:
    """A connection to the cluster for one command; an async context manager."""

    def __init__(
        self,
        broker_url: str,
        credential: Credential,
        *,
        login: BrokerLogin | None = None,
        max_bytes: int = 16 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Connect as `credential`'s principal; `login` overrides its broker login (a user-run broker)."""
        self.cluster = credential.cluster
        self.credential = credential
        # One principal may run several commands at once: each connection is `<principal>.<nonce>`.
        self.client_id = f"{credential.id}.{secrets.token_hex(4)}"
        if login is None:
            login = BrokerLogin(credential.id, credential.broker_password, credential.tls_ca_pem)
        self._transport = Transport(broker_url, self.cluster, self.client_id, login=login, persistent=False)
        # Paired with the coordinator once a frame of it is heard, and with its standbys once a heartbeat
        # of theirs is, so that each checks this client's messages by a MAC, not a signature, and this
        # client the coordinator's (`trust/pairing.py`, Authenticators).
        pairing = None if signatures_disabled() else Pairing(credential)
        self._signer = Signer(credential, pairing)
        self._verifier = Verifier(
            self.cluster, credential.authority_public, max_bytes=max_bytes, pairing=pairing
        )
        self._clock = clock
        self.tracker = JobTracker()
        self.members: dict[str, MemberView] = {}
        self._replies: dict[str, asyncio.Future[Body]] = {}
        self._changed = asyncio.Event()
        self._msg_ids = itertools.count()
        self._rx: asyncio.Task[None] | None = None
        #: Retained job specs heard (`fetch_job`, and the refusal of a reused job id in `submit`).
        self._specs: dict[str, SubmitJob] = {}
        #: Task counts of finished jobs, from their retained `JobState` (their specs are cleared).
        self._totals: dict[str, int] = {}
        #: Standbys whose heartbeats this client follows, to learn their pair offers.
        self._heard_standbys: set[str] = set()
        self._every_heartbeat = False

    async def __aenter__(self) -> Self:
        await self._transport.__aenter__()
        await self._transport.subscribe(topics.inbox(self.client_id), topics.ELECTION, topics.COORD)
        self._rx = asyncio.create_task(self._rx_loop(), name=f"swarm[{self.client_id}].rx")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._rx is not None:
            self._rx.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._rx
        await self._transport.__aexit__(exc_type, exc, tb)

    # --- jobs ---------------------------------------------------------------------------------------

    async def submit(
        self,
        job: SubmitJob,
        *,
        wait: bool = True,
        timeout: float | None = None,
        on_update: Callable[[JobProgress, list[TaskUpdate]], None] | None = None,
    ) -> JobProgress:
        """Submit (idempotently, by job id) and, with `wait`, follow the job until it is finished;
        `on_update(progress, fresh)` hears of the acceptance and of every batch of final task states."""
        cert = self.credential.certificate
        job = replace(job, submitted_by=cert.id, role=cert.role, team=cert.team)
        # The coordinator decides, but a refusal it would send is better said here, before anything runs.
        refusal = may_send(cert.kind, cert.role, SubmitJob.TAG) or permission_refusal(job)
        if refusal is not None:
            raise SwarmError(f"token {cert.id}: {refusal}")
        progress = self.tracker.track(job.job_id, len(job.tasks))
        spec_topic = topics.job_spec(job.job_id)
        # The broker handles one client's packets in order: a SUBSCRIBE queued before the spec is in force
        # when the spec's first records come back, without waiting a round trip for the SUBACK.
        self._transport.subscribe_nowait(topics.job_events(job.job_id), topics.job_commits(job.job_id))
        self._transport.publish(spec_topic, self._seal(spec_topic, job), retain=True)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        seen = 0
        told_accepted = False
        resend_gap = ACK_TIMEOUT
        resend_at = loop.time() + resend_gap
        while True:
            self._changed.clear()
            # Called once when a coordinator accepts the job, and with every batch of fresh updates.
            newly_accepted = progress.accepted and not told_accepted
            if on_update is not None and (len(progress.updates) != seen or newly_accepted):
                told_accepted = progress.accepted
                fresh = list(progress.updates.values())[seen:]
                seen = len(progress.updates)
                on_update(progress, fresh)
            if progress.finished or (progress.accepted and not wait):
                return progress
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"job {job.job_id} not finished within {timeout}s")
            wait_for = ACK_TIMEOUT if remaining is None else min(ACK_TIMEOUT, remaining)
            try:
                await asyncio.wait_for(self._changed.wait(), wait_for)
            except TimeoutError:
                if not progress.accepted and loop.time() >= resend_at:
                    # No coordinator took it yet (maybe one is being elected, or a member's queue at the
                    # broker overflowed and dropped it): say it again, as a new message (receivers drop
                    # a repeated message id as a replay), less and less often.
                    self._transport.publish(spec_topic, self._seal(spec_topic, job), retain=True)
                    resend_gap = min(resend_gap * 2, RESEND_CAP)
                    resend_at = loop.time() + resend_gap

    async def cancel(self, target: str, timeout: float = 5.0) -> str | None:
        """Cancel a task or job; returns the coordinator's error, or None once it was not refused.

        A successful cancel has no reply of its own: it shows as the `cancelled` commit of the target's
        tasks, which ends the wait at once (else the wait ends after `timeout`, not refused)."""
        cert = self.credential.certificate
        jobs = [target] + ([target.rsplit(".", 1)[0]] if "." in target else [])
        jobs = [j for j in jobs if is_id(j)]
        for job_id in jobs:
            self.tracker.track(job_id, _UNBOUNDED)
        if jobs:
            await self._transport.subscribe(*(topics.job_commits(j) for j in jobs))
        ref = self._send_to_coordinator(Cancel(target, by=cert.id, role=cert.role))
        reply = self._replies[ref]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while not reply.done() and not self._cancel_seen(target, jobs):
                self._changed.clear()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                changed: asyncio.Future[Any] = asyncio.ensure_future(self._changed.wait())
                waiting: set[asyncio.Future[Any]] = {changed, reply}
                await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
        finally:
            self._replies.pop(ref, None)
            for job_id in jobs:
                self.tracker.jobs.pop(job_id, None)
        if reply.done():
            body = reply.result()
            return body.reason if isinstance(body, ErrorReply) else None
        return None

    def _cancel_seen(self, target: str, jobs: list[str]) -> bool:
        for job_id in jobs:
            progress = self.tracker.jobs.get(job_id)
            for update in progress.updates.values() if progress else ():
                if update.state == "cancelled" and target in (update.task_id, job_id):
                    return True
        return False

    async def withdraw(self, job_id: str) -> None:
        """Take back the retained spec of a job no coordinator accepted, so that it never runs."""
        await self._transport.publish_and_wait(topics.job_spec(check_id(job_id, "job id")), b"", retain=True)

    async def fetch_job(self, job_id: str, listen: float = 0.5) -> tuple[SubmitJob | None, JobProgress]:
        """The retained spec of a job and every task result committed so far (a job's commits are
        retained on the broker), heard for `listen` seconds; (None, empty progress) if unknown.

        A finished job's spec stays retained as long as its commits (`finished_job_retention`); a spec
        that is gone (refused, withdrawn, or expired) is None, and the progress's `total` then comes from
        the job's retained final state."""
        check_id(job_id, "job id")
        self._specs.pop(job_id, None)
        if job_id in self.tracker.jobs:
            raise SwarmError(f"job {job_id} is being followed already")
        progress = self.tracker.track(job_id, _UNBOUNDED)
        await self._transport.subscribe(
            topics.job_spec(job_id), topics.job_state(job_id), topics.job_commits(job_id)
        )
        await asyncio.sleep(listen)
        spec = self._specs.get(job_id)
        # A snapshot: a later `submit` of this job id must track it afresh, with its own task count.
        del self.tracker.jobs[job_id]
        if spec is not None:
            progress.total = len(spec.tasks)
        elif job_id in self._totals:
            progress.total = self._totals[job_id]
        return spec, progress

    async def tasks(
        self, limit: int = 1000, job_id: str | None = None, timeout: float = 5.0
    ) -> list[TaskSummary]:
        """The coordinator's task table, newest first."""
        ref = self._send_to_coordinator(TasksQuery(limit, job_id))
        reply = await self._reply(ref, timeout)
        if isinstance(reply, ErrorReply):
            raise SwarmError(reply.reason)
        assert isinstance(reply, TasksReply)
        return list(reply.tasks)

    async def quota(self, scope_kind: str, scope: str, timeout: float = 5.0) -> list[QuotaLine]:
        """A user's or team's quotas and what it uses now, as the coordinator counts them."""
        ref = self._send_to_coordinator(QuotaQuery(scope_kind, scope))  # type: ignore[arg-type]
        reply = await self._reply(ref, timeout)
        if isinstance(reply, ErrorReply):
            raise SwarmError(reply.reason)
        assert isinstance(reply, QuotaReply)
        return list(reply.lines)

    # --- members ------------------------------------------------------------------------------------

    async def watch_members(self, duration: float) -> dict[str, MemberView]:
        """Listen to heartbeats until every member heard is known alive or gone, but at least `SETTLE_S`
        (or `duration`, if shorter) for the retained records to come; past `duration`, go on only while
        a member heard from its retained record alone may still send a live one (within one and a half
        of the interval its heartbeat states: a large cluster paces them, two seconds apart at 100
        nodes). Return what was seen."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._follow_every_heartbeat()
        settle = min(duration, SETTLE_S)
        while True:
            elapsed = loop.time() - start
            unheard = [
                m.heartbeat.interval
                for m in self.members.values()
                if m.heartbeat and m.beats < 2 and m.gone is None
            ]
            if elapsed >= settle and not unheard:
                return self.members
            if elapsed >= max(duration, 1.5 * min(max(unheard, default=0.0), MAX_LIVE_BEAT_WAIT_S)):
                return self.members
            await asyncio.sleep(0.05)

    async def member_slots(self, timeout: float = SLOTS_WAIT_S) -> int:
        """The task slots of the members not known to be gone and open to tasks without tolerations
        (no NoSchedule taint), from their heartbeats; 0 when none is heard within `timeout` seconds. The
        broker sends the retained heartbeats right after it acknowledges the subscription, so a pause of
        `QUIET_S` that brings no new member ends the wait (none at all once this client follows every
        heartbeat)."""
        if await self._follow_every_heartbeat():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            heard = 0
            while loop.time() < deadline:
                count = len(self.members)
                if count and count == heard:
                    break
                heard = count
                await asyncio.sleep(QUIET_S)
        return sum(
            view.heartbeat.slots
            for view in self.members.values()
            if view.heartbeat is not None
            and view.gone is None
            and all(taint.effect != "NoSchedule" for taint in view.heartbeat.caps.taints)
        )

    async def _follow_every_heartbeat(self) -> bool:
        """Subscribe to every member's heartbeat unless this client does already; whether it just did."""
        if self._every_heartbeat:
            return False
        await self._transport.subscribe(topics.EVERY_HEARTBEAT)
        self._every_heartbeat = True
        return True

    async def wait_for_members(self, ready: Callable[[dict[str, MemberView]], bool], timeout: float) -> bool:
        """Listen to heartbeats until `ready(members)` holds (True) or `timeout` seconds pass (False)."""
        deadline = asyncio.get_running_loop().time() + timeout
        await self._follow_every_heartbeat()
        while not ready(self.members):
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    # --- plumbing -----------------------------------------------------------------------------------

    def _send_to_coordinator(self, body: Body) -> str:
        msg_id = f"{self.client_id}-{next(self._msg_ids)}"
        self._replies[msg_id] = asyncio.get_running_loop().create_future()
        self._transport.publish(topics.COORD_INBOX, self._seal(topics.COORD_INBOX, body, msg_id))
        return msg_id

    async def _reply(self, ref: str, timeout: float) -> Body:
        try:
            return await asyncio.wait_for(self._replies[ref], timeout)
        except TimeoutError:
            raise TimeoutError("no coordinator answered; is a cluster running?") from None
        finally:
            self._replies.pop(ref, None)

    def _seal(self, topic: str, body: Body, msg_id: str | None = None) -> bytes:
        msg_id = msg_id or f"{self.client_id}-{next(self._msg_ids)}"
        env = Envelope(1, self.cluster, self.client_id, self.tracker.epoch, msg_id, body)
        coordinator = self.tracker.coordinator
        readers = () if coordinator is None else (coordinator, *self.tracker.standbys)
        return self._signer.seal(topic, encode(env), self._clock(), readers=readers)

    async def _rx_loop(self) -> None:
        async for topic, payload, retained in self._transport.messages():
            if not payload:
                continue
            try:
                verified = self._verifier.open(topic, payload, retained=retained, now=self._clock())
            except ProtocolError:
                # Not from the cluster (or not meant for us): never let it reach the tracker.
                continue
            self._on_envelope(topic, verified.envelope)

    def _on_envelope(self, topic: str, env: Envelope) -> None:
        body: Any = env.body
        if isinstance(body, Heartbeat):
            view = self.members.setdefault(env.sender, MemberView(env.sender, None))
            # A retained record comes once for each subscription that covers it (a standby's heartbeat,
            # then every heartbeat): it is one beat.
            if view.heartbeat is None or view.heartbeat.seq != body.seq or view.gone is not None:
                view.beats += 1
            view.heartbeat, view.gone = body, None
        elif isinstance(body, NodeGone):
            self.members.setdefault(env.sender, MemberView(env.sender, None)).gone = body.reason
        elif isinstance(body, SubmitJob):
            self._specs[body.job_id] = body
        elif isinstance(body, JobState):
            self._totals[body.job_id] = body.total
        elif isinstance(body, TasksReply | QuotaReply | ErrorReply):
            future = self._replies.get(body.ref)
            if future is not None and not future.done():
                future.set_result(body)
        else:
            self.tracker.on_envelope(env)
            self._changed.set()
            if isinstance(body, CoordinatorAnnounce):
                self._follow_standbys()

    def _follow_standbys(self) -> None:
        """Follow the heartbeats of the coordinator's standbys: each carries its sender's pair offer (its
        retained one at once), and a standby checks every job spec as the coordinator does. A client
        that follows every heartbeat hears them already."""
        if self._every_heartbeat:
            return
        fresh = [s for s in self.tracker.standbys if s not in self._heard_standbys]
        if fresh:
            self._heard_standbys.update(fresh)
            self._transport.subscribe_nowait(*(topics.heartbeat(s) for s in fresh))
