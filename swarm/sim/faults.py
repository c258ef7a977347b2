"""The simulator's fault kinds: one class each, registered by the name a scenario file uses.

Theory of operation
-------------------
A fault kind is a frozen dataclass whose fields are the keys a `[[faults]]` table may give it besides
`at`, `kind`, `target` and `duration`; `apply` does the damage and `undo` takes it back, both through
the world's own operations (`SimWorld.crash`, `partition`, ...), which note each happening in the trace.
A `NodeFault` strikes one node, picked by the entry's `target` when the fault fires; a `WorldFault`
strikes the broker, the network or the hosts, and takes no target. `undo` may find its damage already
repaired (a node restarted by churn, a link healed by an overlapping fault) and then does nothing.

Everything that knows the kinds reads `FAULTS`: the scenario parser (which keys each kind takes, and
their checks), the runner (apply, undo after `duration`, undo whatever is still in force when the fault
period ends), `swarm sim faults`, and the report's count per kind. A new fault is one class here with
`@register`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar

from swarm.sim.network import LinkMode, NetRates

if TYPE_CHECKING:
    from swarm.sim.simnode import SimNode
    from swarm.sim.world import SimWorld

__all__ = [
    "FAULTS",
    "BrokerRestart",
    "Crash",
    "DiskFull",
    "Fault",
    "FlakyNetwork",
    "Leave",
    "Load",
    "NodeFault",
    "Partition",
    "ScheduledFault",
    "Slow",
    "WorldFault",
    "describe_faults",
    "register",
]


class Fault:
    """What every fault kind declares: its name in scenario files and a line for `swarm sim faults`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    #: How long the fault lasts when its entry gives no `duration` (None: until the fault period ends).
    default_duration: ClassVar[float | None] = None

    def check(self) -> None:
        """Raise `ValueError` naming the key whose value this kind cannot take (types are checked already)."""


class NodeFault(Fault):
    """A fault that strikes one node."""

    def apply(self, world: SimWorld, node: SimNode) -> None:
        """Do the damage to `node`."""
        raise NotImplementedError

    def undo(self, world: SimWorld, node: SimNode) -> None:
        """Take the damage back, if it is still there."""
        raise NotImplementedError


class WorldFault(Fault):
    """A fault of the whole world: the broker, the network, the hosts."""

    def apply(self, world: SimWorld) -> None:
        """Do the damage."""
        raise NotImplementedError

    def undo(self, world: SimWorld) -> None:
        """Take the damage back, if it is still there."""
        raise NotImplementedError


#: Every fault kind by its name in scenario files.
FAULTS: dict[str, type[NodeFault] | type[WorldFault]] = {}

K = TypeVar("K", bound=type[NodeFault] | type[WorldFault])


def register(kind: K) -> K:
    """Make a fault kind known by its `name`; a second kind of the same name is a programming error."""
    if kind.name in FAULTS:
        raise ValueError(f"fault kind {kind.name!r} registered twice ({FAULTS[kind.name]} and {kind})")
    FAULTS[kind.name] = kind
    return kind


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    """One fault of a scenario: what, when, on whom (`target`, node faults only) and for how long."""

    at: float
    fault: NodeFault | WorldFault
    target: str = "random"
    duration: float | None = None

    @property
    def lasts(self) -> float | None:
        """Seconds until the fault is undone (None: at the end of the fault period)."""
        return self.duration if self.duration is not None else self.fault.default_duration


def describe_faults() -> list[str]:
    """One line per kind: its name, whether it takes a target, its keys and what it does."""
    lines = []
    for name, kind in sorted(FAULTS.items()):
        keys = ", ".join(f.name for f in dataclasses.fields(kind))  # type: ignore[arg-type]
        where = "node" if issubclass(kind, NodeFault) else "world"
        lines.append(f"{name:15} {where:5}  {kind.summary}" + (f" (keys: {keys})" if keys else ""))
    return lines


# --- node faults ---------------------------------------------------------------------------------------


@register
@dataclass(frozen=True, slots=True)
class Crash(NodeFault):
    """The process dies at once; undone by a restart, with or without its data dir."""

    name: ClassVar[str] = "crash"
    summary: ClassVar[str] = "kill the node (its will fires); restart it after duration"
    keep_disk: bool = True

    def apply(self, world: SimWorld, node: SimNode) -> None:
        """Kill the node."""
        world.crash(node.node_id)

    def undo(self, world: SimWorld, node: SimNode) -> None:
        """Start it again, with its data dir unless `keep_disk` is false."""
        world.restart(node.node_id, keep_disk=self.keep_disk)


@register
@dataclass(frozen=True, slots=True)
class Leave(Crash):
    """A clean shutdown (SIGTERM): work handed back, no will, session ended; undone as a crash is."""

    name: ClassVar[str] = "leave"
    summary: ClassVar[str] = "shut the node down cleanly; restart it after duration"

    def apply(self, world: SimWorld, node: SimNode) -> None:
        """Shut the node down."""
        world.leave(node.node_id)


@register
@dataclass(frozen=True, slots=True)
class Partition(NodeFault):
    """The node's link is cut both ways, or only outbound, or only inbound (`swarm.sim.network`)."""

    name: ClassVar[str] = "partition"
    summary: ClassVar[str] = "cut the node's link (mode cut, out or in); heal it after duration"
    mode: LinkMode = "cut"

    def apply(self, world: SimWorld, node: SimNode) -> None:
        """Cut the link."""
        world.partition(node.node_id, self.mode)

    def undo(self, world: SimWorld, node: SimNode) -> None:
        """Heal it."""
        if node.link is not None:
            world.heal(node.node_id)


@register
@dataclass(frozen=True, slots=True)
class Slow(NodeFault):
    """The node's tasks take `factor` times as long."""

    name: ClassVar[str] = "slow"
    summary: ClassVar[str] = "scale the node's task durations by factor"
    factor: float = 4.0

    def apply(self, world: SimWorld, node: SimNode) -> None:
        """Slow the node down."""
        world.set_slow(node.node_id, self.factor)

    def undo(self, world: SimWorld, node: SimNode) -> None:
        """Back to normal speed."""
        if node.slow != 1.0:
            world.set_slow(node.node_id, 1.0)


@register
@dataclass(frozen=True, slots=True)
class DiskFull(NodeFault):
    """The node's data dir refuses writes (ENOSPC), across restarts, until undone: its epoch cannot be
    stored, which the core hears as `PersistFailed` (map outputs are not modelled as failing)."""

    name: ClassVar[str] = "disk-full"
    summary: ClassVar[str] = (
        "make writes to the node's data dir fail (its epoch is not stored); free it after duration"
    )

    def apply(self, world: SimWorld, node: SimNode) -> None:
        """Fill the disk."""
        world.set_disk_full(node.node_id, True)

    def undo(self, world: SimWorld, node: SimNode) -> None:
        """Free it."""
        if node.disk_full:
            world.set_disk_full(node.node_id, False)


# --- world faults --------------------------------------------------------------------------------------


@register
@dataclass(frozen=True, slots=True)
class BrokerRestart(WorldFault):
    """The broker dies and is back after `duration` (1 s unless given); what survives is configured."""

    name: ClassVar[str] = "broker-restart"
    summary: ClassVar[str] = (
        "restart the broker, down for duration (1 s), keeping retained records and sessions or not"
    )
    default_duration: ClassVar[float | None] = 1.0
    keep_retained: bool = True
    keep_sessions: bool = False

    def apply(self, world: SimWorld) -> None:
        """Stop the broker, losing what it does not persist."""
        world.stop_broker(self.keep_retained, self.keep_sessions)

    def undo(self, world: SimWorld) -> None:
        """Start it again; every node reconnects."""
        if not world.broker_up:
            world.start_broker()


@register
@dataclass(frozen=True, slots=True)
class FlakyNetwork(WorldFault):
    """Every message may be dropped, duplicated, delayed or reordered at these rates."""

    name: ClassVar[str] = "network"
    summary: ClassVar[str] = "drop, duplicate, delay or reorder messages at the given rates"
    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0
    delay_s: tuple[float, float] = (0.05, 0.5)

    def check(self) -> None:
        """Rates are probabilities."""
        for key in ("drop", "duplicate", "delay", "reorder"):
            if getattr(self, key) > 1:
                raise ValueError(f"{key} must be in [0, 1] (a probability), got {getattr(self, key)}")

    def apply(self, world: SimWorld) -> None:
        """Open the window."""
        world.set_net_rates(NetRates(self.drop, self.duplicate, self.delay, self.delay_s, self.reorder))

    def undo(self, world: SimWorld) -> None:
        """Close it."""
        world.set_net_rates(NetRates())


@register
@dataclass(frozen=True, slots=True)
class Load(WorldFault):
    """Other work takes a share of every host's cores (a scenario with a `[cpu]` table)."""

    name: ClassVar[str] = "load"
    summary: ClassVar[str] = "other work takes factor (a share, below 1) of every host's cores"
    factor: float

    def check(self) -> None:
        """A share of the cores, and not all of them."""
        if not 0.0 <= self.factor < 1.0:
            raise ValueError(
                f"factor must be in [0, 1) for kind = 'load' (a share of the cores), got {self.factor}"
            )

    def apply(self, world: SimWorld) -> None:
        """Take the share."""
        world.set_background(self.factor)

    def undo(self, world: SimWorld) -> None:
        """Back to the scenario's own background load."""
        world.set_background(world.cpu.background if world.cpu else 0.0)
