"""A simulated device as the world keeps it: the real `NodeMachine` plus its profile, faults and log.

Kept apart from `world.py` so that the world stays about running the clock and carrying out effects.
The bounded `log` is the node's causal story: every step it took, printed with an invariant violation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from swarm.core.events import Event, MessageReceived, TaskFinished
from swarm.core.node import NodeMachine
from swarm.devices.profiles import DeviceProfile
from swarm.mapreduce.kernels import Keys, Values
from swarm.sim.cpu import Host
from swarm.sim.network import LinkMode

__all__ = ["BATCHED", "DEFAULT_PROFILE", "LOG_LENGTH", "SimNode"]

#: In a node's log, an event handled in a step with others; the step's effects are on its last event.
BATCHED = -1
#: Steps kept per node for the causal story printed with a failure.
LOG_LENGTH = 48

#: A device as the first simulator had it: a fast, steady machine on a short link.
DEFAULT_PROFILE = DeviceProfile("sim", 1.0, 4, 4096, 1.0, 2.0, 0.0, False)


@dataclass(slots=True)
class SimNode:
    """A simulated device: the real `NodeMachine` plus what the world keeps for it."""

    node_id: str
    machine: NodeMachine
    profile: DeviceProfile
    speed: float
    incarnation: int
    disk: dict[str, int]
    # Bulk data in the data dir (a map's sorted runs, by path): lost with the data dir, like `disk`.
    files: dict[str, tuple[Keys, Values]] = field(default_factory=dict)
    running: dict[tuple[str, int], int] = field(default_factory=dict)
    up: bool = True
    connected: bool = False
    skew: float = 0.0
    slow: float = 1.0
    #: Writes to the data dir fail (a `disk-full` fault); it outlasts restarts, as a full disk does.
    disk_full: bool = False
    link: LinkMode | None = None
    log: deque[tuple[float, Event, int]] = field(default_factory=lambda: deque(maxlen=LOG_LENGTH))
    tasks_done: int = 0
    busy: float = 0.0
    up_since: float = 0.0
    uptime: float = 0.0
    # Shared CPUs (swarm.sim.cpu): the host this node runs on, when its loop is next free, and the worst
    # lag of its ticks.
    host: Host | None = None
    cpu_free: float = 0.0
    max_lag: float = 0.0
    # The node's loop: events waiting for its next step, whether that step is scheduled, and when the
    # late tick among them was due (shared CPUs).
    inbox: list[Event] = field(default_factory=list)
    turn_due: bool = False
    tick_due: float | None = None

    def story(self) -> list[str]:
        """The node's last steps, oldest first: what it was told and how many effects it answered with."""
        return [
            f"{at:.3f} [{self.node_id}] {_describe(ev)} "
            + ("(batched)" if n == BATCHED else f"-> {n} effect(s)")
            for at, ev, n in self.log
        ]


def _describe(event: Event) -> str:
    if isinstance(event, MessageReceived):
        env = event.env
        return (
            f"{type(env.body).__name__} on {event.topic} from {env.sender} epoch={env.epoch} ({env.msg_id})"
        )
    if isinstance(event, TaskFinished):
        r = event.result
        return f"TaskFinished {r.task_id}#{r.attempt} {r.kind}"
    return type(event).__name__
