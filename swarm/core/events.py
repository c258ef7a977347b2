"""What happens to a node (events, the input of `handle`) and what it asks for (effects, the output).

Both are plain data. The shell (`swarm.runtime.shell`) and the simulator (`swarm.sim.world`) turn real or
simulated happenings into events and carry out effects; the core only ever returns lists of effects.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarm.core.quota import Quota
from swarm.messages import Assignment, Body, Envelope, TaskResult

__all__ = [
    "CancelTask",
    "ClearRetained",
    "Connected",
    "DropJobData",
    "Effect",
    "Event",
    "Leave",
    "MessageReceived",
    "Persist",
    "PersistFailed",
    "PolicyChanged",
    "Publish",
    "RetainedCleared",
    "RunTask",
    "Subscribe",
    "TaskFinished",
    "Tick",
    "Unsubscribe",
]


# --- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """The clock moved; timeouts and periodic work are due-checked."""


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A decoded message arrived on `topic` (relative to the cluster prefix)."""

    topic: str
    env: Envelope


@dataclass(frozen=True, slots=True)
class RetainedCleared:
    """An empty retained message arrived: the record at `topic` was deleted."""

    topic: str


@dataclass(frozen=True, slots=True)
class TaskFinished:
    """The executor finished an attempt, whatever the outcome."""

    result: TaskResult


@dataclass(frozen=True, slots=True)
class Connected:
    """The broker connection is (re)established; the broker may be a new one that knows nothing."""


@dataclass(frozen=True, slots=True)
class Leave:
    """The node is shutting down cleanly: hand back work and say goodbye."""


@dataclass(frozen=True, slots=True)
class PolicyChanged:
    """The cluster's signed roster brought quotas (all of them, replacing the previous ones)."""

    quotas: tuple[Quota, ...]


@dataclass(frozen=True, slots=True)
class PersistFailed:
    """The shell could not store `epoch` (a full disk, a read-only or failing one): the node holds it in
    memory only, and the shell withheld the `after_persist` publishes that needed it on disk."""

    epoch: int
    reason: str


Event = (
    Tick
    | MessageReceived
    | RetainedCleared
    | TaskFinished
    | Connected
    | Leave
    | PolicyChanged
    | PersistFailed
)


# --- effects -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publish:
    """Send `body` on `topic` (relative to the cluster prefix), stamped with `epoch`.

    `lossy` lets the broker drop it rather than queue it for a subscriber that is behind (MQTT QoS 0):
    for a heartbeat, which the next one replaces, a late copy is worth less than none.

    `after_persist` sends it only if `epoch` is durably stored by then (a claim: a node must never claim
    an epoch it could forget, `docs/election.md` rule 1); when the `Persist` before it failed, the
    shell withholds it, and the core learns why from `PersistFailed`.
    """

    topic: str
    body: Body
    epoch: int
    retain: bool = False
    lossy: bool = False
    after_persist: bool = False


@dataclass(frozen=True, slots=True)
class ClearRetained:
    """Delete the retained record at `topic` (an empty retained publish)."""

    topic: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Start receiving `topic`."""

    topic: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Stop receiving `topic`."""

    topic: str


@dataclass(frozen=True, slots=True)
class RunTask:
    """Start an attempt in the executor; its outcome returns as `TaskFinished`."""

    assignment: Assignment


@dataclass(frozen=True, slots=True)
class CancelTask:
    """Kill a running attempt; it still returns as `TaskFinished` (kind `cancelled`)."""

    task_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class DropJobData:
    """A job is over: delete the bulk data (map outputs) this node kept for it."""

    job_id: str


@dataclass(frozen=True, slots=True)
class Persist:
    """Durably store the highest epoch seen; the shell must finish this before later effects, and report
    a failure as `PersistFailed` (not crash: a full disk is no reason for a node to leave)."""

    epoch: int


Effect = Publish | ClearRetained | Subscribe | Unsubscribe | RunTask | CancelTask | Persist | DropJobData
