"""Which device runs a task: requirements filter the members, a weighted score ranks the rest.

Kept apart from the scheduler so that it is a pure function of a task and a set of candidate views,
easy to property-test, and replaceable.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarm.core.config import PlacementWeights
from swarm.devices.capabilities import meets_isolation
from swarm.messages import Heartbeat, Requirements

__all__ = ["Candidate", "choose", "unmet", "unmet_by_all"]


@dataclass(slots=True)
class Candidate:
    """A live member as the scheduler sees it: its heartbeat plus what the scheduler gave it."""

    node_id: str
    heartbeat: Heartbeat
    held: int = 0
    limit: int = 1
    exclusive_held: bool = False
    latency_ms: float = 0.0

    @property
    def has_room(self) -> bool:
        """Whether one more attempt may be sent now."""
        return not self.exclusive_held and self.held < self.limit


def unmet(req: Requirements, node_id: str, hb: Heartbeat) -> str | None:
    """The first requirement `hb` does not meet, as text, or None when it qualifies."""
    caps = hb.caps
    if node_id in req.exclude or hb.name in req.exclude:
        return f"exclude={','.join(req.exclude)}"
    if caps.cores < req.min_cores:
        return f"min_cores={req.min_cores}"
    if caps.memory_mb < req.min_memory_gb * 1024:
        return f"min_memory_gb={req.min_memory_gb:g}"
    if caps.disk_free_gb < req.min_storage_gb:
        return f"min_storage_gb={req.min_storage_gb:g}"
    if req.platform is not None and caps.platform != req.platform:
        return f"platform={req.platform}"
    if req.arch is not None and caps.arch != req.arch:
        return f"arch={req.arch}"
    if req.role is not None and caps.role != req.role:
        return f"role={req.role}"
    if req.gpu is not None and caps.gpu != req.gpu:
        return f"gpu={str(req.gpu).lower()}"
    if req.isolation is not None and not meets_isolation(caps.isolation, req.isolation):
        return f"isolation={req.isolation}"
    if req.runtime is not None and req.runtime not in caps.runtimes:
        return f"runtime={req.runtime}"
    return None


def unmet_by_all(req: Requirements, candidates: list[Candidate]) -> str | None:
    """Why no member could ever run this task now, or None if one could (once it has room)."""
    if not candidates:
        return "no live member"
    reasons = []
    for c in candidates:
        why = unmet(req, c.node_id, c.heartbeat)
        if why is None:
            return None
        reasons.append(why)
    common = max(sorted(set(reasons)), key=reasons.count)  # sorted: the same text under any hash seed
    return f"no member satisfies {common} ({len(candidates)} live)"


def score(c: Candidate, w: PlacementWeights) -> float:
    """Higher is better: idle CPU, free memory, a short queue, a short link, a full or charging battery."""
    hb = c.heartbeat
    free_cpu = max(0.0, 1.0 - hb.load)
    free_mem = min(1.0, hb.free_memory_mb / max(hb.caps.memory_mb, 1))
    queue = c.held / max(hb.slots, 1)
    latency = 1.0 / (1.0 + c.latency_ms / 10.0)
    battery = hb.caps.battery_percent
    power = 1.0 if battery is None or hb.caps.charging else battery / 100.0
    return (
        w.free_cpu * free_cpu
        + w.free_memory * free_mem
        - w.load * queue
        + w.latency * latency
        + w.battery * power
    )


def choose(req: Requirements, candidates: list[Candidate], w: PlacementWeights) -> Candidate | None:
    """The best candidate with room that meets `req`; ties go to the smallest node id."""
    best: Candidate | None = None
    best_key: tuple[float, str] | None = None
    for c in candidates:
        if not c.has_room or (req.exclusive and c.held) or unmet(req, c.node_id, c.heartbeat):
            continue
        key = (-score(c, w), c.node_id)
        if best_key is None or key < best_key:
            best, best_key = c, key
    return best
