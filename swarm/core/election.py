"""Coordinator election by first claim in broker order, with epochs as fencing tokens.

Theory of operation
-------------------
The epoch only grows, and a node persists every new highest epoch before it acts on it (`Persist` comes
before any effect that depends on it). To coordinate epoch E a node publishes `Claim(E)` on the `election`
topic, where E is one more than the highest epoch it has seen. One broker delivers a topic's messages to
every subscriber in the order it received them, so every member sees the same *first* claim for E; the
node whose own claim is first wins E and starts acting, all others accept it. A claim for an epoch we have
already seen a claim for is ignored, and so is any claim below our highest epoch.

A claim or announcement for a higher epoch makes an acting coordinator step down at once; the gate in
`node.py` drops coordinator traffic of older epochs, so a deposed coordinator can do no harm even before
it notices. `docs/election.md` holds the full safety argument and its assumptions.

Liveness: a node claims when no coordinator is known after `startup_wait`, or when the known one is dead
(`Membership` says so after the failure timeout, so a blip is not a failover). Members claim in id order,
staggered, to avoid needless duplicate claims; a claim that yields no acting coordinator within the
election timeout is followed by a claim for the next epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from swarm.core.config import CoreConfig
from swarm.core.events import Effect, Persist, Publish
from swarm.messages import Claim

__all__ = ["Election", "ElectionOutcome"]

#: (member id -> state or None) and the ids of alive members; supplied by the node from `Membership`.
StateOf = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class ElectionOutcome:
    """Effects to carry out, and whether this node just started or stopped acting."""

    effects: list[Effect]
    elected: int | None = None
    deposed: bool = False


class Election:
    """One node's view of the epoch and the coordinator."""

    def __init__(self, self_id: str, config: CoreConfig, persisted_epoch: int, now: float) -> None:
        self._self_id = self_id
        self._config = config
        self.epoch = persisted_epoch
        self.coordinator: str | None = None
        self.acting_epoch: int | None = None
        self._first_claim: dict[int, str] = {}
        self._started_at = now
        self._claimed_at: float | None = None
        # Never the persisted epoch: a retained claim of ours replayed after a restart is from a previous
        # life of this node, and must not make this process think it won.
        self._claimed_epoch = 0
        self._need_since: float | None = None

    @property
    def startup_wait(self) -> float:
        """How long a fresh node listens before it may claim: long enough to learn the current epoch."""
        return 2 * self._config.heartbeat_interval + self._config.tick_interval

    def on_claim(self, sender: str, epoch: int, now: float) -> ElectionOutcome:
        """A claim arrived; the first one for a new epoch decides it."""
        if epoch < self.epoch or epoch in self._first_claim:
            return ElectionOutcome([])
        self._first_claim[epoch] = sender
        self._forget_old_claims(epoch)
        effects: list[Effect] = []
        if epoch > self.epoch:
            self.epoch = epoch
            effects.append(Persist(epoch))
        deposed = self._step_down_below(epoch)
        if sender == self._self_id and self._claimed_epoch == epoch:
            self.acting_epoch = epoch
            self.coordinator = self._self_id
            return ElectionOutcome(effects, elected=epoch, deposed=deposed)
        self.coordinator = sender
        return ElectionOutcome(effects, deposed=deposed)

    def on_announce(self, epoch: int, coordinator: str) -> ElectionOutcome:
        """A coordinator says it is acting for `epoch`."""
        if epoch < self.epoch:
            return ElectionOutcome([])
        effects: list[Effect] = []
        if epoch > self.epoch:
            self.epoch = epoch
            effects.append(Persist(epoch))
        self._first_claim.setdefault(epoch, coordinator)
        deposed = self._step_down_below(epoch) if coordinator != self._self_id else False
        self.coordinator = coordinator
        return ElectionOutcome(effects, deposed=deposed)

    def tick(self, now: float, state_of: StateOf, alive_ids: list[str]) -> ElectionOutcome:
        """Claim the next epoch when no coordinator acts and it is this node's turn."""
        if self.acting_epoch is not None or now - self._started_at < self.startup_wait:
            return ElectionOutcome([])
        if self._coordinator_may_be_acting(now, state_of):
            self._need_since = None
            return ElectionOutcome([])
        if self._need_since is None:
            self._need_since = now
        if self._claimed_at is not None and now - self._claimed_at < self._config.election_timeout:
            return ElectionOutcome([])
        rank = sorted(set(alive_ids) | {self._self_id}).index(self._self_id)
        if now - self._need_since < rank * self._config.heartbeat_interval / 2:
            return ElectionOutcome([])
        # `epoch` moves only when a claim or announcement arrives: raising it here would make the gate
        # drop commits of the current epoch that every other member still counts.
        epoch = max(self.epoch, self._claimed_epoch) + 1
        self._claimed_epoch = epoch
        self._claimed_at = now
        self.coordinator = None
        return ElectionOutcome([Persist(epoch), Publish("election", Claim(epoch), epoch=epoch, retain=True)])

    def _coordinator_may_be_acting(self, now: float, state_of: StateOf) -> bool:
        if self.coordinator is None:
            return False
        if self.coordinator == self._self_id:
            # Named by a retained announcement of our previous life: this process is not acting.
            return self.acting_epoch is not None
        state = state_of(self.coordinator)
        if state is None:
            # Named by a retained announcement but never heard from: give it the failure timeout.
            return now - self._started_at < self._config.failure_timeout
        return state != "dead"

    def forget_coordinator(self, node_id: str) -> None:
        """The coordinator left cleanly: stop waiting for the failure timeout."""
        if self.coordinator == node_id and node_id != self._self_id:
            self.coordinator = None

    def _step_down_below(self, epoch: int) -> bool:
        if self.acting_epoch is not None and self.acting_epoch < epoch:
            self.acting_epoch = None
            return True
        return False

    def _forget_old_claims(self, epoch: int) -> None:
        for old in [e for e in self._first_claim if e < epoch - 16]:
            del self._first_claim[old]

    def validate(self) -> None:
        """Invariants: an acting epoch is never above the highest epoch, and we won it."""
        if self.acting_epoch is not None:
            assert self.acting_epoch <= self.epoch, (self.acting_epoch, self.epoch)
            assert self._first_claim.get(self.acting_epoch) == self._self_id, "acting without winning"
