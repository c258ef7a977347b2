"""Coordinator election by first claim in broker order, with epochs as fencing tokens.

Theory of operation
-------------------
The epoch only grows, and a node persists every new highest epoch before it acts on it (`Persist` comes
before any effect that depends on it; a claim goes out only once its epoch is on disk, `after_persist`).
To coordinate epoch E a node publishes `Claim(E)` on the `election` topic, where E is one more than the
highest epoch it has seen. One broker delivers a topic's messages to
every subscriber in the order it received them, so every member sees the same *first* claim for E; the
node whose own claim is first wins E and starts acting, all others accept it. A claim for an epoch we have
already seen a claim for is ignored, and so is any claim below our highest epoch.

A claim or announcement for a higher epoch makes an acting coordinator step down at once; the gate in
`node.py` drops coordinator traffic of older epochs, so a deposed coordinator can do no harm even before
it notices. `docs/election.md` holds the full safety argument and its assumptions.

Liveness: a node claims when no coordinator is known after `startup_wait`, or when the known one is dead
(`Membership` says so after the failure timeout, so a blip is not a failover). Claims are staggered to
avoid needless duplicates: the standbys the coordinator named go first, in its order, then (an election
timeout later) every other member at a point fixed by its id, in a window of one heartbeat interval per
`CLAIMANTS_PER_INTERVAL` nodes the roster admits; a claim that yields no acting coordinator within the
election timeout is followed by a claim for the next epoch. A
node claims only while it follows every heartbeat and the whole job log (`may_claim`, which the node
arranges once `wants_to_claim`): its own claim, echoed back, then arrives after every retained heartbeat
and commit, so the winner's member table and replica are complete when it starts acting.

Under overload (many nodes on a saturated CPU, `docs/election.md` says what went wrong) every wait above is
multiplied by the node's `patience` (`Membership.patience`, 1 when its own loop is on time): a claim
takes as long as the claimant's and the observers' lag to be seen, so the turns are spread that much
wider, and a claimant does not claim the next epoch while its own claim has not come back through the
broker (within twice the patient election timeout): a claim is answered by its echo, and claiming again
before it only deposes whoever won meanwhile. The broker can be the slow part too: a node that follows
every heartbeat times its own heartbeats' way back through the broker, and that delay raises its
patience as its loop lag does (`Membership.note_echo`).

A disk that refuses the epoch (full, read-only) comes back as `on_persist_failed`. An epoch learned
from others is still followed from memory: fencing needs it now, and what a restart would forget is
learned again from the retained claim and announcement. A claim is what must not go out unpersisted,
since a node that forgot its claim could claim that epoch again; the shell withholds it, and the node
takes it back and tries its turn again an election timeout later, persisting a higher epoch first.
Meanwhile members with a working disk take their turns, so a full disk keeps a node out of office but
never holds the cluster up.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

from swarm import topics
from swarm.core.config import CoreConfig
from swarm.core.events import Effect, Persist, Publish
from swarm.messages import Claim

__all__ = [
    "CLAIMANTS_PER_INTERVAL",
    "Election",
    "StateOf",
    "Transition",
    "claim_message",
]

#: Members whose turns to claim fall in one heartbeat interval when no standby is left: the turns of all
#: the nodes the roster admits are spread over as many intervals as that takes.
CLAIMANTS_PER_INTERVAL = 8


def claim_message(epoch: int) -> Publish:
    """This node's claim for `epoch`, retained, and sent only with `epoch` on disk."""
    return Publish(topics.ELECTION, Claim(epoch), epoch=epoch, retain=True, after_persist=True)


#: (member id -> state or None); supplied by the node from `Membership`.
StateOf = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class Transition:
    """This node just started acting for epoch `elected`, or stopped acting (`deposed`), or both."""

    elected: int | None = None
    deposed: bool = False


class Election:
    """One node's view of the epoch and the coordinator.

    Like every sub-machine of the node, its handlers return nothing: the effects they decide on wait in
    an outbox for `drain()`, and a change the node must act on (this node elected or deposed) for
    `take_transition()`.
    """

    def __init__(self, self_id: str, config: CoreConfig, persisted_epoch: int, now: float) -> None:
        self._self_id = self_id
        self._config = config
        self.epoch = persisted_epoch
        self.coordinator: str | None = None
        self.standbys: tuple[str, ...] = ()
        #: A device on battery claims a heartbeat interval later, so a mains-powered one usually wins.
        self.on_battery = False
        #: How many nodes the cluster's roster admits (0: not known); it spreads the members' turns.
        self.roster_size = 0
        self.acting_epoch: int | None = None
        self._first_claim: dict[int, str] = {}
        self._started_at = now
        self._claimed_at: float | None = None
        # Never the persisted epoch: a retained claim of ours replayed after a restart is from a previous
        # life of this node, and must not make this process think it won.
        self._claimed_epoch = 0
        self._need_since: float | None = None
        self._turn_since: float | None = None
        # When the claim that named the current coordinator arrived (None: named by an announcement).
        self._named_at: float | None = None
        self._effects: list[Effect] = []
        self._transition: Transition | None = None

    @property
    def startup_wait(self) -> float:
        """How long a fresh node listens before it may claim: long enough to learn the current epoch."""
        return 2 * self._config.heartbeat_interval + self._config.tick_interval

    @property
    def echo_pending(self) -> bool:
        """Whether this node's last claim has not come back through the broker yet."""
        return self._claimed_epoch > self.epoch

    def on_claim(self, sender: str, epoch: int, now: float) -> None:
        """A claim arrived; the first one for a new epoch decides it."""
        if epoch < self.epoch or epoch in self._first_claim:
            return
        self._first_claim[epoch] = sender
        self._forget_old_claims(epoch)
        self._raise_epoch(epoch)
        deposed = self._step_down_below(epoch)
        if sender == self._self_id and self._claimed_epoch == epoch:
            self.acting_epoch = epoch
            self.coordinator = self._self_id
            self._note(Transition(elected=epoch, deposed=deposed))
            return
        self.coordinator = sender
        self._named_at = now
        self._note(Transition(deposed=deposed))

    def on_announce(self, epoch: int, coordinator: str, standbys: tuple[str, ...] = ()) -> None:
        """A coordinator says it is acting for `epoch`, and names its standbys."""
        if epoch < self.epoch:
            return
        self.standbys = standbys
        self._raise_epoch(epoch)
        self._first_claim.setdefault(epoch, coordinator)
        if coordinator != self._self_id:
            self._note(Transition(deposed=self._step_down_below(epoch)))
        if coordinator != self.coordinator:
            self._named_at = None
        self.coordinator = coordinator

    def drain(self) -> list[Effect]:
        """The effects decided on since the last call, in order (a `Persist` before what depends on it)."""
        effects, self._effects = self._effects, []
        return effects

    def take_transition(self) -> Transition | None:
        """Whether this node started or stopped acting since the last call (None: neither)."""
        transition, self._transition = self._transition, None
        return transition

    def _raise_epoch(self, epoch: int) -> None:
        if epoch > self.epoch:
            self.epoch = epoch
            self._effects.append(Persist(epoch))

    def _note(self, transition: Transition) -> None:
        # The node takes the transition after every call that may make one, so none is overwritten.
        if transition.elected is not None or transition.deposed:
            self._transition = transition

    @property
    def wants_to_claim(self) -> bool:
        """Whether this node's turn to claim has come: it must follow everything before it may."""
        return self._turn_since is not None

    @property
    def claiming(self) -> bool:
        """Whether this node wants to claim, or its claim has not come back yet: either way it may win,
        so it must go on following everything (a claim echoed after the node stopped would find its
        replica emptied)."""
        return self.wants_to_claim or self.echo_pending

    def tick(self, now: float, state_of: StateOf, may_claim: bool, patience: float = 1.0) -> None:
        """Claim the next epoch when no coordinator acts and it is this node's turn.

        `may_claim` says the node follows every heartbeat and the whole job log; until it does, reaching
        its turn only sets `wants_to_claim`. `patience` (at least 1) stretches every wait: the node's own
        loop is late by about that many times the usual, and so is every claim it sees.
        """
        patience = max(patience, 1.0)
        if self.acting_epoch is not None or now - self._started_at < self.startup_wait * patience:
            return
        if self._coordinator_may_be_acting(now, state_of, patience):
            self._need_since = self._turn_since = None
            return
        if self._need_since is None:
            self._need_since = now
        if now - self._need_since < self._turn_delay(state_of) * patience:
            return
        if self._turn_since is None:
            self._turn_since = now
        if not may_claim or self._waiting_for_claim(now, patience):
            return
        # `epoch` moves only when a claim or announcement arrives: raising it here would make the gate
        # drop commits of the current epoch that every other member still counts.
        epoch = max(self.epoch, self._claimed_epoch) + 1
        self._claimed_epoch = epoch
        self._claimed_at = now
        self.coordinator = None
        self._effects += [Persist(epoch), claim_message(epoch)]

    def on_persist_failed(self, epoch: int) -> None:
        """Storing `epoch` failed; if it was for our claim, the claim was withheld: take it back."""
        if self.echo_pending and epoch == self._claimed_epoch:
            # One below a claim is the highest epoch this node had seen or claimed before it (`tick`),
            # so a claim of ours that did go out is still awaited. `_claimed_at` stays: the next turn
            # comes an election timeout after this one, not at the next tick.
            self._claimed_epoch = epoch - 1

    def _waiting_for_claim(self, now: float, patience: float) -> bool:
        """Whether our last claim may still produce a coordinator: it has not timed out, or it has not
        even come back yet. Its echo answers it unless the connection lost it, hence the bound.

        The echo is waited for even on a node whose own loop is on time: a starved broker delayed claims
        by more than the election timeout on 100 real nodes, and a claimant that claimed the next epoch
        before its last one came back deposed whoever had won meanwhile, two dozen epochs in a row.
        """
        if self._claimed_at is None:
            return False
        waited = now - self._claimed_at
        timeout = self._config.election_timeout * patience
        return waited < (2 * timeout if self.echo_pending else timeout)

    def _turn_delay(self, state_of: StateOf) -> float:
        """How long after finding no coordinator this node waits before claiming: live standbys one step
        apart in the announced order; everyone else, when standbys were named, one election timeout after
        the last standby's turn, spread by a hash of its id over one heartbeat interval per
        `CLAIMANTS_PER_INTERVAL` nodes of the roster (nobody but the coordinator knows every member,
        and a thousand nodes must not claim at once).

        The election timeout is the standbys' time to win: a claim makes its claimant subscribe to every
        heartbeat and the whole job log, so members that claim while a standby's claim is still on its
        way only multiply that load on the broker and the CPU. 50 real nodes on two cores claimed
        together that way, and the standby that claimed first took 24 s to act.
        """
        if self.coordinator == self._self_id:
            # Named by a retained announcement of this node's previous life: its heartbeats make the
            # others think the coordinator alive, so nobody else will claim.
            return 0.0
        step = self._config.heartbeat_interval / 2
        standbys = [s for s in self.standbys if state_of(s) != "dead"]
        if self._self_id in standbys:
            return standbys.index(self._self_id) * step
        hb = self._config.heartbeat_interval
        width = hb * max(1.0, self.roster_size / CLAIMANTS_PER_INTERVAL)
        spread = zlib.crc32(self._self_id.encode()) / 2**32 * width + (hb if self.on_battery else 0.0)
        if not self.standbys:
            return spread
        return len(standbys) * step + self._config.election_timeout + spread

    def _coordinator_may_be_acting(self, now: float, state_of: StateOf, patience: float) -> bool:
        if self.coordinator is None:
            return False
        if self.coordinator == self._self_id:
            # Named by a retained announcement of our previous life: this process is not acting.
            return self.acting_epoch is not None
        state = state_of(self.coordinator)
        if state is None:
            # Named but never heard from: give it the failure timeout, from when its claim came (it is
            # busy winning) or, named by a retained announcement, from when this node started.
            since = self._started_at if self._named_at is None else max(self._named_at, self._started_at)
            return now - since < self._config.failure_timeout * patience
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
