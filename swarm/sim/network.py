"""Network faults, as the simulated broker sees them: per-link cuts and per-message fates.

Every decision draws from the world's one seeded `random.Random`, so a seed fixes which messages a fault
hits. The faults fall in two groups, and the split is the point of this module:

* Within MQTT's promises (QoS 1 over TCP, persistent sessions), so the safety argument of
  `docs/election.md` still holds: extra delay, a lost packet retransmitted (profile `loss`: the message
  and everything behind it on that path arrive later, as TCP does), a QoS 1 duplicate delivered right
  after the original, a full partition (the broker queues the node's messages in its session and
  delivers them when it reconnects), and a node's own publishes lost on the way in (for every
  subscriber alike, so the broker's single order is intact).
* Beyond them: a delivery dropped (QoS 0 behaviour), a delivery reordered, an inbound-only partition
  (the node hears nothing while others hear it), a session discarded (broker restart without
  persistence, session expiry, a full queue). The broker reports each such message through `on_loss`;
  the invariant checker then no longer holds the cluster to the guarantees that need assumption A.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from swarm.sim.broker import CLEAN, Fate

__all__ = ["RETRANSMIT_TIMEOUT", "LinkMode", "NetFaults", "NetRates"]

#: A lost TCP segment is sent again after about this long (Linux's minimum RTO is 0.2 s).
RETRANSMIT_TIMEOUT = 0.2

#: `cut`: no traffic either way (the broker sees the connection drop); `out`: the node's publishes are
#: lost but it still receives; `in`: it receives nothing but its publishes get through.
LinkMode = Literal["cut", "out", "in"]


@dataclass(frozen=True, slots=True)
class NetRates:
    """Per-message fault probabilities while a flaky-network window is open."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    delay_s: tuple[float, float] = (0.05, 0.5)
    reorder: float = 0.0

    @property
    def active(self) -> bool:
        """Whether any rate is non-zero."""
        return bool(self.drop or self.duplicate or self.delay or self.reorder)


class NetFaults:
    """The current fault state; the world changes it, the broker consults it."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.links: dict[str, LinkMode] = {}
        self.loss: dict[str, float] = {}
        self.rates = NetRates()

    def inbound(self, client_id: str) -> Fate:
        """A publish from `client_id` to the broker."""
        if self.links.get(client_id) in ("out", "cut"):
            return Fate(drop=True)
        return self._fate(client_id, may_break=False)

    def outbound(self, client_id: str) -> Fate:
        """A delivery from the broker to `client_id`."""
        if self.links.get(client_id) == "in":
            return Fate(drop=True)
        return self._fate(client_id, may_break=True)

    def _fate(self, client_id: str, may_break: bool) -> Fate:
        rng = self._rng
        loss = self.loss.get(client_id, 0.0)
        delay = RETRANSMIT_TIMEOUT if loss and rng.random() < loss else 0.0
        r = self.rates
        if not r.active:
            return Fate(delay=delay) if delay else CLEAN
        if r.drop and rng.random() < r.drop:
            # A publish lost before the broker is lost for everyone: still within the single order.
            return Fate(drop=True)
        if r.delay and rng.random() < r.delay:
            delay += rng.uniform(*r.delay_s)
        if may_break and r.reorder and rng.random() < r.reorder:
            return Fate(reorder=delay + rng.uniform(*r.delay_s))
        duplicate = may_break and bool(r.duplicate) and rng.random() < r.duplicate
        if not delay and not duplicate:
            return CLEAN
        return Fate(delay=delay, duplicate=duplicate)
