"""The members as the API uses them: the device list, device events, and the cluster view for planning.

The API follows every member's heartbeat only while it is used (`swarm.api.members` says why): the first
request that needs the members subscribes and waits `MEMBERS_SETTLE_S` for the retained heartbeats, and
`forget_if_idle` lets go after `IDLE_S` without a request or a stream client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from swarm import topics
from swarm.api.backend import Json
from swarm.api.events import EventHub
from swarm.api.members import IDLE_S, MemberTable
from swarm.messages import Envelope, Heartbeat
from swarm.workflow.validate import ClusterView, MemberView

__all__ = ["MEMBERS_SETTLE_S", "DeviceWatch", "Subscriber"]

#: Seconds to let retained heartbeats arrive when the API starts following them.
MEMBERS_SETTLE_S = 0.3


class Subscriber(Protocol):
    """What the device watch needs of its node: to follow topics and let go of them."""

    async def subscribe(self, *topics: str) -> None:
        """Start receiving topics."""
        ...

    async def unsubscribe(self, *topics: str) -> None:
        """Stop receiving topics."""
        ...


class DeviceWatch:
    """Every member's last heartbeat while the API needs them, as devices, events and a cluster view."""

    def __init__(
        self, node: Subscriber, events: EventHub, clock: Callable[[], float], member_timeout: float
    ) -> None:
        self._node = node
        self._events = events
        self._clock = clock
        self._members = MemberTable(member_timeout)
        #: When the API last needed every member (None: it does not follow their heartbeats now).
        self._used: float | None = None
        self._seen: dict[str, tuple[Any, ...]] = {}

    @property
    def following(self) -> bool:
        """Whether every member's heartbeat is followed now."""
        return self._used is not None

    def on_envelope(self, env: Envelope) -> None:
        """A member's heartbeat or goodbye."""
        self._members.on_envelope(env, self._clock())

    async def need_members(self) -> None:
        """Follow every member's heartbeat from now on, if not already: on the first call the retained
        heartbeats arrive within a broker round trip, waited for here."""
        first = self._used is None
        self._used = self._clock()
        if first:
            await self._node.subscribe(topics.EVERY_HEARTBEAT)
            await asyncio.sleep(MEMBERS_SETTLE_S)

    async def forget_if_idle(self) -> None:
        """Stop following heartbeats after `IDLE_S` without a request that needs them or a stream."""
        used = self._used
        if used is not None and not self._events.listened and self._clock() - used > IDLE_S:
            self._used = None
            await self._node.unsubscribe(topics.EVERY_HEARTBEAT)

    def live(self) -> list[tuple[str, Heartbeat]]:
        """The members alive now, with their last heartbeats."""
        return [
            (m.node_id, m.heartbeat)
            for m in self._members.members(self._clock())
            if m.state == "alive" and m.heartbeat
        ]

    def cluster_view(self) -> ClusterView:
        """The live members as the contract check sees them."""
        views = []
        for node_id, hb in self.live():
            c = hb.caps
            views.append(
                MemberView(
                    node_id,
                    hb.name,
                    c.cores,
                    c.memory_mb,
                    c.disk_free_gb,
                    c.gpu,
                    frozenset(c.runtimes),
                    {},
                    hb.slots,
                )
            )
        return ClusterView(tuple(views))

    def slots(self) -> int:
        """The live members' slots (at least 1: an estimate needs somewhere to run)."""
        return max(1, sum(m.slots for m in self.cluster_view().members))

    async def devices(self) -> list[Json]:
        """Every member with its state, capabilities and load."""
        await self.need_members()
        return self._entries()

    def watch(self) -> None:
        """Emit a `device` event for every member whose state, work or load changed since the last call
        (the host calls this every second; heartbeats bring the changes)."""
        if not self._events.listened:
            return
        seen: dict[str, tuple[Any, ...]] = {}
        for entry in self._entries():
            key = (entry["state"], entry.get("running"), round(entry.get("load", 0.0), 2))
            seen[entry["nodeId"]] = key
            if self._seen.get(entry["nodeId"]) != key:
                self._events.emit({"type": "device", **entry})
        for gone in set(self._seen) - set(seen):
            self._events.emit({"type": "device", "nodeId": gone, "state": "forgotten"})
        self._seen = seen

    def _entries(self) -> list[Json]:
        out = []
        for m in self._members.members(self._clock()):
            hb = m.heartbeat
            entry: Json = {"nodeId": m.node_id, "state": m.state}
            if hb is not None:
                c = hb.caps
                entry.update(
                    name=hb.name,
                    slots=hb.slots,
                    running=hb.running,
                    load=hb.load,
                    freeMemoryMB=hb.free_memory_mb,
                    cores=c.cores,
                    memoryMB=c.memory_mb,
                    diskFreeGB=c.disk_free_gb,
                    platform=c.platform,
                    arch=c.arch,
                    gpu=c.gpu,
                    batteryPercent=c.battery_percent,
                    charging=c.charging,
                    isolation=c.isolation,
                    runtimes=list(c.runtimes),
                    hostname=c.hostname,
                )
            out.append(entry)
        return out
