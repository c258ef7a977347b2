"""Which device runs a task: requirements filter the members, a weighted score ranks the rest.

Kept apart from the scheduler so that it is a pure function of a task and a set of candidate views,
easy to property-test, and replaceable.

`unmet` checks `Requirements.exclude` first, then every requirement a member's capabilities meet, in
field order, by the rows of the requirements table (`swarm.devices.capabilities.FieldSpec`); then the
constraints, in this order:

* required labels: the member carries every `Requirements.labels` pair with the same value;
* taints: a NoSchedule taint the task does not tolerate excludes the member; a PreferNoSchedule one
  only lowers its score by `PREFER_NO_SCHEDULE_PENALTY` (a member it tolerates is not penalised);
* anti-affinity: the scheduler passes `avoid`, the members where the tasks named by `Requirements.avoid`
  run or last ran (member id -> task id); the task is not placed there.

Pinning (`Requirements.pin`, from an allocation) is applied by the roster and by `unmet_by_all`: the
pinned members that are alive and qualify are the only candidates; when none is, every member is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from swarm.core.config import PlacementWeights
from swarm.devices.capabilities import field_specs, tolerated
from swarm.messages import Heartbeat, Requirements

__all__ = ["PREFER_NO_SCHEDULE_PENALTY", "Candidate", "choose", "pinned", "unmet", "unmet_by_all"]

#: Score lost per PreferNoSchedule taint a task does not tolerate: more than the best member's whole
#: advantage from idle CPU and free memory at the default weights, so such a member is a last resort.
PREFER_NO_SCHEDULE_PENALTY = 2.0


def _met_by_capabilities() -> tuple[tuple[str, Any, str, Callable[[Any, Any], bool]], ...]:
    """(requirement, its default, the capability that meets it, how), for each row of the requirements
    table that a member's capabilities meet; a requirement at its default asks for nothing."""
    unset = Requirements()
    rows = []
    for name, spec in field_specs(Requirements).items():
        if spec.meets is not None:
            rows.append((name, getattr(unset, name), spec.capability, spec.meets))
    return tuple(rows)


_MET_BY_CAPABILITIES = _met_by_capabilities()


@dataclass(slots=True)
class Candidate:
    """A live member as the scheduler sees it: its heartbeat plus what the scheduler gave it."""

    node_id: str
    heartbeat: Heartbeat
    held: int = 0
    limit: int = 1
    exclusive_held: bool = False
    latency_ms: float = 0.0
    #: Slots a reservation holds here (`swarm.core.reservations`).
    reserved: int = 0

    @property
    def has_room(self) -> bool:
        """Whether one more attempt may be sent now. Where slots are reserved, other work gets only the
        free slots, nothing prefetched: a queued attempt would start in a reserved slot."""
        if self.exclusive_held:
            return False
        if self.reserved:
            return self.held + self.reserved < min(self.limit, self.heartbeat.slots)
        return self.held < self.limit


def unmet(
    req: Requirements, node_id: str, hb: Heartbeat, avoid: Mapping[str, str] | None = None
) -> str | None:
    """The first requirement `hb` does not meet, as text, or None when it qualifies; `avoid` maps the
    members this task must not share to the task placed there (anti-affinity)."""
    caps = hb.caps
    if node_id in req.exclude or hb.name in req.exclude:
        return f"exclude={','.join(req.exclude)}"
    for name, unset, capability, meets in _MET_BY_CAPABILITIES:
        wanted = getattr(req, name)
        if wanted != unset and not meets(getattr(caps, capability), wanted):
            return f"{name}={_text(wanted)}"
    if req.labels:
        have = caps.label_map()
        for key, value in req.labels:
            if have.get(key) != value:
                return f"label {key}={value}"
    for taint in caps.taints:
        if taint.effect == "NoSchedule" and not tolerated(req.tolerations, taint):
            return f"untolerated taint {taint.text}"
    if avoid and node_id in avoid:
        return f"anti-affinity with {avoid[node_id]}"
    return None


def _text(value: Any) -> str:
    """A requirement's value as `--require` takes it."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def pinned(
    req: Requirements, candidates: list[Candidate], avoid: Mapping[str, str] | None = None
) -> list[Candidate]:
    """The candidates `req` may go to: its pinned members that qualify, or, when it pins none or none
    of those is live and qualifies, all of them."""
    if not req.pin:
        return candidates
    chosen = [
        c for c in candidates if c.node_id in req.pin and unmet(req, c.node_id, c.heartbeat, avoid) is None
    ]
    return chosen or candidates


def unmet_by_all(
    req: Requirements, candidates: list[Candidate], avoid: Mapping[str, str] | None = None
) -> str | None:
    """Why no member could ever run this task now, or None if one could (once it has room)."""
    if not candidates:
        return "no live member"
    reasons = []
    for c in candidates:
        why = unmet(req, c.node_id, c.heartbeat, avoid)
        if why is None:
            return None
        reasons.append(why)
    common = max(sorted(set(reasons)), key=reasons.count)  # sorted: the same text under any hash seed
    return f"no member satisfies {common} ({len(candidates)} live)"


def score(c: Candidate, w: PlacementWeights, req: Requirements | None = None) -> float:
    """Higher is better: idle CPU, free memory, a short queue, a short link, a full or charging battery,
    and no PreferNoSchedule taint the task (`req`) does not tolerate."""
    hb = c.heartbeat
    free_cpu = max(0.0, 1.0 - hb.load)
    free_mem = min(1.0, hb.free_memory_mb / max(hb.caps.memory_mb, 1))
    queue = c.held / max(hb.slots, 1)
    latency = 1.0 / (1.0 + c.latency_ms / 10.0)
    battery = hb.caps.battery_percent
    power = 1.0 if battery is None or hb.caps.charging else battery / 100.0
    tolerations = req.tolerations if req is not None else ()
    repelled = sum(
        1 for t in hb.caps.taints if t.effect == "PreferNoSchedule" and not tolerated(tolerations, t)
    )
    return (
        -PREFER_NO_SCHEDULE_PENALTY * repelled
        + w.free_cpu * free_cpu
        + w.free_memory * free_mem
        - w.load * queue
        + w.latency * latency
        + w.battery * power
    )


def choose(
    req: Requirements,
    candidates: list[Candidate],
    w: PlacementWeights,
    avoid: Mapping[str, str] | None = None,
) -> Candidate | None:
    """The best candidate with room that meets `req`; ties go to the smallest node id."""
    best: Candidate | None = None
    best_key: tuple[float, str] | None = None
    for c in candidates:
        if not c.has_room or (req.exclusive and c.held) or unmet(req, c.node_id, c.heartbeat, avoid):
            continue
        key = (-score(c, w, req), c.node_id)
        if best_key is None or key < best_key:
            best, best_key = c, key
    return best
