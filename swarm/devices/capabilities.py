"""What a device can do, as announced in its heartbeats.

Capabilities travel between nodes (every heartbeat carries them), so they are a frozen value: the
codec (`swarm/codec.py`) checks every field's presence and type when a heartbeat arrives, and
`__post_init__` checks the ranges, because the scheduler filters and scores on these fields and must
be able to trust them.

Units: `memory_mb` is MiB (2**20 bytes) and `disk_free_gb` is GiB (2**30 bytes), the units `free -m`
and `df -h` show, so numbers in `swarm status` match what users see elsewhere.

`isolation` is how strongly the node walls task code off from itself, one of `ISOLATION_LEVELS`, weakest
first: "process" (a worker process of its own, with time and memory limits), "user" (also an
unprivileged user id, never the node's root), "sandbox" (also bubblewrap namespaces: a read-only system,
a private /tmp, no network unless the task asks for it). Each level includes the ones before it, so a
task that requires a level runs on any node that gives that level or a stronger one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ISOLATION_LEVELS", "Capabilities", "isolation_rank", "meets_isolation"]

#: The isolation levels, weakest to strongest: the one place that orders them.
ISOLATION_LEVELS: tuple[str, ...] = ("process", "user", "sandbox")


def isolation_rank(level: str) -> int:
    """The position of `level` in `ISOLATION_LEVELS`; ValueError naming the levels if it is unknown."""
    try:
        return ISOLATION_LEVELS.index(level)
    except ValueError:
        known = ", ".join(ISOLATION_LEVELS)
        raise ValueError(f"unknown isolation level {level!r} (weakest to strongest: {known})") from None


def meets_isolation(have: str, want: str) -> bool:
    """Whether a node giving isolation `have` may run a task that requires `want`."""
    return isolation_rank(have) >= isolation_rank(want)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """A device's static capabilities, probed once at start-up.

    `battery_percent` and `charging` are None when the device has no battery or it could not be read;
    `charging` means "on external power" (a full battery on the charger counts), because what the
    scheduler wants to know is whether work drains the battery.
    """

    cores: int
    memory_mb: int
    disk_free_gb: float
    platform: str
    arch: str
    gpu: bool
    battery_percent: float | None
    charging: bool | None
    termux: bool
    role: str
    hostname: str
    isolation: str = "process"
    #: The workflow runtimes this node offers (PYTHON, SHELL, JVM, MAPREDUCE, SWARM), see `swarm.runtimes`.
    runtimes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Reject values no real device has, whichever way the object was built."""
        if self.cores < 1:
            raise ValueError(f"capabilities: field 'cores' must be >= 1, got {self.cores}")
        if self.memory_mb < 0:
            raise ValueError(f"capabilities: field 'memory_mb' must be >= 0, got {self.memory_mb}")
        if not math.isfinite(self.disk_free_gb) or self.disk_free_gb < 0:
            raise ValueError(f"capabilities: field 'disk_free_gb' must be >= 0, got {self.disk_free_gb}")
        if self.battery_percent is not None and not 0.0 <= self.battery_percent <= 100.0:
            raise ValueError(
                f"capabilities: field 'battery_percent' must be in [0, 100], got {self.battery_percent}"
            )
        for name in ("platform", "arch", "role"):
            if not getattr(self, name):
                raise ValueError(f"capabilities: field {name!r} must not be empty")
        try:
            isolation_rank(self.isolation)
        except ValueError as exc:
            raise ValueError(f"capabilities: field 'isolation': {exc}") from None
