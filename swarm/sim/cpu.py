"""Shared, saturated CPUs: many simulated nodes on one host, each an event loop that runs late when busy.

Without this model every simulated step takes no time. With it (a scenario's `[cpu]` table), each node
belongs to a host of `cores` cores, and every step costs CPU time: handling an event, decoding and
verifying a received message, signing and sending each effect. A host runs the work of all its nodes
first come, first served on its cores, so when the nodes ask for more than the host has, a queue builds
and every node's events are handled late, its own timers included: a tick due at t is handled at t plus
the host's backlog, and the heartbeat it sends goes out that late. A node handles its own events one at a
time and in order, as an asyncio loop does. `background` is the share of the cores other work takes
(the node's tasks, the broker, other programs); the `load` fault raises it for a while.

The shell measures how late its tick is handled and tells the core (`NodeMachine.note_loop_lag`); the
world does the same here, so the core sees the lag a real overloaded node would measure.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

__all__ = ["CpuModel", "Host"]


@dataclass(frozen=True, slots=True)
class CpuModel:
    """How nodes share hosts, and what a step costs (milliseconds of one core at full speed)."""

    hosts: int = 1
    cores: int = 2
    event_ms: float = 0.2
    message_ms: float = 0.5
    effect_ms: float = 0.2
    background: float = 0.0
    #: The broker drops a client it has heard nothing from for 1.5 times this (MQTT keepalive).
    keepalive_s: float = 30.0

    def __post_init__(self) -> None:
        if self.hosts < 1 or self.cores < 1:
            raise ValueError(f"cpu.hosts and cpu.cores must be at least 1, got {self.hosts}, {self.cores}")
        if not 0.0 <= self.background < 1.0:
            raise ValueError(f"cpu.background must be in [0, 1), got {self.background}")


@dataclass(slots=True)
class Host:
    """One machine's cores: work queues first come, first served on the core that frees first."""

    name: str
    cores: int
    background: float = 0.0
    _free_at: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._free_at = [0.0] * self.cores

    def run(self, ready: float, cost_ms: float) -> float:
        """Queue `cost_ms` of work that may start at `ready`; returns when it is done."""
        cost = cost_ms / 1000.0 / (1.0 - self.background)
        start = max(ready, heapq.heappop(self._free_at))
        done = start + cost
        heapq.heappush(self._free_at, done)
        return done

    def backlog(self, now: float) -> float:
        """How long work made ready now would wait for a core."""
        return max(self._free_at[0] - now, 0.0)
