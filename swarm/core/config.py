"""Settings the pure core needs: timeouts, capacity and placement weights."""

from __future__ import annotations

from dataclasses import dataclass, field

from swarm.errors import ConfigError

__all__ = ["CoreConfig", "PlacementWeights"]


@dataclass(frozen=True, slots=True)
class PlacementWeights:
    """How much each signal counts when several devices could run a task."""

    free_cpu: float = 1.0
    free_memory: float = 0.5
    load: float = 2.0
    latency: float = 0.5
    battery: float = 1.0


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Timeouts in seconds. Validation enforces heartbeat < failure timeout < election timeout.

    `standbys` members besides the coordinator follow every heartbeat and the job log (everyone else
    follows only the coordinator's heartbeat); `placement_sample` is how many members with room a task
    is scored against (see `Scheduler`).
    """

    heartbeat_interval: float = 0.5
    failure_timeout: float = 2.5
    election_timeout: float = 4.0
    tick_interval: float = 0.05
    slots: int = 2
    prefetch: int = 0
    pending_timeout: float = 300.0
    takeover_grace: float = 1.0
    unacked_result_ttl: float = 60.0
    forget_dead_after: float = 600.0
    finished_job_retention: float = 3600.0
    role: str = "worker"
    standbys: int = 3
    placement_sample: int = 16
    weights: PlacementWeights = field(default_factory=PlacementWeights)

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_interval < self.failure_timeout < self.election_timeout:
            raise ConfigError(
                "need 0 < heartbeat_interval < failure_timeout < election_timeout, got "
                f"{self.heartbeat_interval} / {self.failure_timeout} / {self.election_timeout}"
            )
        if self.slots < 1:
            raise ConfigError(f"slots must be at least 1, got {self.slots}")
        if self.standbys < 0:
            raise ConfigError(f"standbys must be >= 0, got {self.standbys}")
        if self.placement_sample < 1:
            raise ConfigError(f"placement_sample must be at least 1, got {self.placement_sample}")
        if self.prefetch < 0:
            raise ConfigError(f"prefetch must be >= 0, got {self.prefetch}")
        if self.tick_interval <= 0 or self.tick_interval > self.heartbeat_interval:
            raise ConfigError("tick_interval must be positive and no longer than heartbeat_interval")

    def queue_limit(self, slots: int) -> int:
        """Attempts a device with `slots` may hold at once: prefetched ones keep it from idling between
        a result and the next assignment."""
        return slots + (self.prefetch if self.prefetch else 4 * slots)
