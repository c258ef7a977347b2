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
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Self

from swarm.codec import decode, encode
from swarm.core.tracker import JobProgress, JobTracker
from swarm.errors import ProtocolError, SwarmError
from swarm.messages import (
    Body,
    Cancel,
    Envelope,
    ErrorReply,
    Heartbeat,
    NodeGone,
    SubmitJob,
    TasksQuery,
    TasksReply,
    TaskSummary,
    TaskUpdate,
)
from swarm.runtime.mqtt import Transport

__all__ = ["MemberView", "SwarmClient"]

ACK_TIMEOUT = 2.0


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

    def __init__(self, broker_url: str, cluster: str, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.cluster = cluster
        self.client_id = f"c-{secrets.token_hex(4)}"
        self._transport = Transport(broker_url, cluster, self.client_id, persistent=False)
        self._max_bytes = max_bytes
        self.tracker = JobTracker()
        self.members: dict[str, MemberView] = {}
        self._replies: dict[str, asyncio.Future[Body]] = {}
        self._changed = asyncio.Event()
        self._msg_ids = itertools.count()
        self._rx: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self._transport.__aenter__()
        await self._transport.subscribe(f"node/{self.client_id}/in", "election", "coord")
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
        """Submit (idempotently, by job id) and, with `wait`, follow the job until it is finished."""
        progress = self.tracker.track(job.job_id, len(job.tasks))
        if not job.submitted_by:
            job = replace(job, submitted_by=self.client_id)
        payload = self._encode(job)
        # The broker handles one client's packets in order: once the SUBSCRIBE is on the wire, the spec
        # may follow at once, without waiting a round trip for the SUBACK.
        subscribed = asyncio.ensure_future(
            self._transport.subscribe(f"job/{job.job_id}/events", f"job/{job.job_id}/commits/+")
        )
        await asyncio.sleep(0)
        self._transport.publish(f"job/{job.job_id}/spec", payload, retain=True)
        await subscribed
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        seen = 0
        while True:
            self._changed.clear()
            if on_update is not None and len(progress.updates) != seen:
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
                if not progress.accepted:
                    # No coordinator took it yet (maybe one is being elected): say it again.
                    self._transport.publish(f"job/{job.job_id}/spec", payload, retain=True)

    async def cancel(self, target: str, timeout: float = 5.0) -> str | None:
        """Cancel a task or job; returns the coordinator's error, or None once it was sent and not refused."""
        ref = self._send_to_coordinator(Cancel(target))
        try:
            reply = await self._reply(ref, timeout)
        except TimeoutError:
            return None
        return reply.reason if isinstance(reply, ErrorReply) else None

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

    # --- members ------------------------------------------------------------------------------------

    async def watch_members(self, duration: float) -> dict[str, MemberView]:
        """Listen to heartbeats for `duration` seconds and return what was seen."""
        await self._transport.subscribe("node/+/hb")
        await asyncio.sleep(duration)
        return self.members

    # --- plumbing -----------------------------------------------------------------------------------

    def _send_to_coordinator(self, body: Body) -> str:
        msg_id = f"{self.client_id}-{next(self._msg_ids)}"
        env = Envelope(1, self.cluster, self.client_id, self.tracker.epoch, msg_id, body)
        self._replies[msg_id] = asyncio.get_running_loop().create_future()
        self._transport.publish("coord/in", encode(env))
        return msg_id

    async def _reply(self, ref: str, timeout: float) -> Body:
        try:
            return await asyncio.wait_for(self._replies[ref], timeout)
        except TimeoutError:
            raise TimeoutError("no coordinator answered; is a cluster running?") from None
        finally:
            self._replies.pop(ref, None)

    def _encode(self, body: Body) -> bytes:
        msg_id = f"{self.client_id}-{next(self._msg_ids)}"
        return encode(Envelope(1, self.cluster, self.client_id, self.tracker.epoch, msg_id, body))

    async def _rx_loop(self) -> None:
        async for topic, payload in self._transport.messages():
            if not payload:
                continue
            try:
                env = decode(payload, cluster=self.cluster, max_bytes=self._max_bytes)
            except ProtocolError:
                continue
            self._on_envelope(topic, env)

    def _on_envelope(self, topic: str, env: Envelope) -> None:
        body: Any = env.body
        if isinstance(body, Heartbeat):
            view = self.members.setdefault(env.sender, MemberView(env.sender, body))
            view.heartbeat, view.gone = body, None
            view.beats += 1
        elif isinstance(body, NodeGone):
            self.members.setdefault(env.sender, MemberView(env.sender, None)).gone = body.reason
        elif isinstance(body, TasksReply | ErrorReply):
            future = self._replies.get(body.ref)
            if future is not None and not future.done():
                future.set_result(body)
        else:
            self.tracker.on_envelope(env)
            self._changed.set()
