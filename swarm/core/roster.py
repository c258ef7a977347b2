"""The scheduler's view of the live members: who may get work, who has room, and which one a task goes to.

Kept apart from `scheduler.py` so that the task table and this table of devices each have one job. The
roster is updated incrementally (a heartbeat, a held attempt more or less), never rebuilt per placement,
so placing a task costs the same in a cluster of ten or of five thousand:

* A member is *open* once at most half its queue (slots plus prefetch) is held and closes when the queue
  is full, so devices are refilled half a queue at a time and assignments (and the results that follow)
  travel in batches instead of one task per message.
* A task is scored (`placement.choose`) against the first `placement_sample` open members that meet its
  requirements, which then move to the back of the rotation, so every open member is looked at in turn.
* A task pinned to members (`Requirements.pin`, from an allocation) is scored against those of them that
  are alive and qualify, whether open or not, and waits for one of them to have room; only when none
  of them is alive and qualifies is it placed like any other task.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from swarm.core.config import CoreConfig
from swarm.core.placement import Candidate, choose, pinned, unmet
from swarm.messages import Heartbeat, Requirements

__all__ = ["LATENCY_WINDOW_S", "Roster"]

#: A member's link estimate is the least time one of its attempts spent outside the task (the links
#: there and back, and its queue) over the last one to two windows of this many seconds: a floor, as TCP
#: keeps the least round trip it saw. A moving average counted a burst's queueing as link: after one busy
#: moment the member that had queued more kept the higher estimate, lost every tie while the cluster
#: was idle, and got no attempt that could correct it (its queue is the load term's to weigh). For the
#: same reason an estimate no attempt refreshed for two windows is forgotten: a member measured once
#: while cold (its first attempt starts a worker process) would otherwise keep losing to the others.
LATENCY_WINDOW_S = 10.0


@dataclass(slots=True)
class _LinkFloor:
    """The least of the observations in the current window and the one before it."""

    started: float
    current: float
    previous: float = math.inf

    def observe(self, spent_ms: float, now: float) -> None:
        if now - self.started >= 2 * LATENCY_WINDOW_S:  # the last window saw nothing: start afresh
            self.previous, self.current, self.started = math.inf, spent_ms, now
        elif now - self.started >= LATENCY_WINDOW_S:
            self.previous, self.current, self.started = self.current, spent_ms, now
        else:
            self.current = min(self.current, spent_ms)

    def value(self, now: float) -> float:
        """The estimate; 0.0, as for a member never measured, once it is two windows old."""
        if now - self.started >= 2 * LATENCY_WINDOW_S:
            return 0.0
        return min(self.current, self.previous)


class Roster:
    """Live members as placement candidates, and the open ones in rotation order."""

    def __init__(self, config: CoreConfig) -> None:
        self._config = config
        self._members: dict[str, Candidate] = {}
        # An OrderedDict, as a dict with many deletions is slow to iterate from the front.
        self._open: OrderedDict[str, None] = OrderedDict()
        self._links: dict[str, _LinkFloor] = {}
        self.changed = False

    def upsert(
        self, node_id: str, hb: Heartbeat, now: float, held: int, exclusive_held: bool, reserved: int = 0
    ) -> None:
        """An alive member's heartbeat; `changed` is set when a member joins or its capabilities change."""
        c = self._members.get(node_id)
        if c is None:
            c = self._members[node_id] = Candidate(node_id, hb)
            self.changed = True
        elif c.heartbeat.caps != hb.caps:
            self.changed = True
        link = self._links.get(node_id)
        c.latency_ms = 0.0 if link is None else link.value(now)
        c.heartbeat = hb
        c.limit = self._config.queue_limit(hb.slots)
        self.set_load(node_id, held, exclusive_held, reserved)

    def remove(self, node_id: str) -> None:
        """The member is suspect or dead: no new work goes there."""
        self._members.pop(node_id, None)
        self._open.pop(node_id, None)

    def set_load(self, node_id: str, held: int, exclusive_held: bool, reserved: int = 0) -> None:
        """What the member holds now: it opens at half its queue and closes when the queue is full (with
        slots reserved, it is open exactly while it has a free slot that is not reserved)."""
        c = self._members.get(node_id)
        if c is None:
            return
        c.held = held
        c.exclusive_held = exclusive_held
        c.reserved = reserved
        if not c.has_room:
            self._open.pop(node_id, None)
        elif reserved or c.held <= c.limit // 2:
            self._open.setdefault(node_id, None)

    def observe_latency(self, node_id: str, spent_ms: float, now: float) -> None:
        """Time an attempt of `node_id` spent outside the task; its estimate is the floor of the recent
        ones (`LATENCY_WINDOW_S`)."""
        spent_ms = max(spent_ms, 0.0)
        link = self._links.get(node_id)
        if link is None:
            link = self._links[node_id] = _LinkFloor(now, spent_ms)
        else:
            link.observe(spent_ms, now)
        if (c := self._members.get(node_id)) is not None:
            c.latency_ms = link.value(now)

    @property
    def has_room(self) -> bool:
        """Whether any member is open."""
        return bool(self._open)

    def member(self, node_id: str) -> Candidate | None:
        """A live member, or None."""
        return self._members.get(node_id)

    def candidates(self) -> list[Candidate]:
        """Every live member, for asking whether any could ever run a task."""
        return list(self._members.values())

    def place(self, req: Requirements, avoid: Mapping[str, str] | None = None) -> Candidate | None:
        """The best of the next `placement_sample` open members that meet `req` (and are not in `avoid`,
        see `placement.unmet`); those looked at go to the back of the rotation. A pinned task is placed
        among its pinned members only, while one of them is alive and qualifies."""
        if req.pin:
            members = [self._members[n] for n in req.pin if n in self._members]
            chosen = pinned(req, members, avoid)
            if chosen and unmet(req, chosen[0].node_id, chosen[0].heartbeat, avoid) is None:
                return choose(req, chosen, self._config.weights, avoid)
        sample: list[Candidate] = []
        looked: list[str] = []
        for node_id in self._open:
            looked.append(node_id)
            c = self._members[node_id]
            if not (req.exclusive and c.held) and unmet(req, node_id, c.heartbeat, avoid) is None:
                sample.append(c)
                if len(sample) >= self._config.placement_sample:
                    break
        for node_id in looked:
            self._open.move_to_end(node_id)
        return choose(req, sample, self._config.weights, avoid)
