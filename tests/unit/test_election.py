"""Election: first claim in broker order wins, one coordinator per epoch, epochs persisted first."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.core.config import CoreConfig
from swarm.core.election import CLAIMANTS_PER_INTERVAL, Election, StateOf, Transition
from swarm.core.events import Effect, Persist, Publish
from swarm.core.membership import Membership
from swarm.devices.profiles import simulated_capabilities
from swarm.messages import Claim, Heartbeat

CFG = CoreConfig()


@dataclass(frozen=True, slots=True)
class Step:
    """What one call on an election did: the effects it decided on, and whether it elected or deposed."""

    effects: list[Effect]
    elected: int | None = None
    deposed: bool = False


def _taken(e: Election) -> Step:
    transition = e.take_transition() or Transition()
    return Step(e.drain(), transition.elected, transition.deposed)


def ticked(e: Election, now: float, state_of: StateOf, may_claim: bool, patience: float = 1.0) -> Step:
    """Tick, and take what the tick did."""
    e.tick(now, state_of, may_claim, patience)
    return _taken(e)


def claimed(e: Election, sender: str, epoch: int, now: float) -> Step:
    """Deliver a claim, and take what it did."""
    e.on_claim(sender, epoch, now)
    return _taken(e)


def announced(e: Election, epoch: int, coordinator: str, standbys: tuple[str, ...] = ()) -> Step:
    """Deliver an announcement, and take what it did."""
    e.on_announce(epoch, coordinator, standbys)
    return _taken(e)


def claim(e: Election, start: float, state_of: StateOf = lambda n: None) -> Step:
    """Tick until the node claims: its turn comes within one heartbeat interval when it has no standbys."""
    t = start
    while t <= start + CFG.heartbeat_interval + CFG.tick_interval:
        out = ticked(e, t, state_of, True)
        if out.effects:
            return out
        t += CFG.tick_interval
    raise AssertionError(f"{e.coordinator} never claimed")


def test_first_claim_wins_and_persist_comes_first() -> None:
    a = Election("a", CFG, 0, now=0.0)
    out = claim(a, 5.0)
    assert out.effects[0] == Persist(1)
    assert isinstance(out.effects[1], Publish) and out.effects[1].body == Claim(1)
    assert out.effects[1].after_persist, "a claim must never go out with its epoch off the disk"
    assert claimed(a, "b", 1, 5.1).elected is None  # b's claim reached the broker first
    assert claimed(a, "a", 1, 5.2).elected is None
    assert a.acting_epoch is None and a.coordinator == "b"


def test_own_claim_first_elects_and_higher_epoch_deposes() -> None:
    a = Election("a", CFG, 3, now=0.0)
    claim(a, 5.0)
    assert claimed(a, "a", 4, 5.1).elected == 4
    out = claimed(a, "b", 5, 9.0)
    assert out.deposed and a.acting_epoch is None and out.effects == [Persist(5)]


def test_a_claim_whose_epoch_could_not_be_stored_is_taken_back_and_tried_again() -> None:
    """The shell withheld it, so no echo can come: the node does not wait twice the election timeout
    for one, nor claim the next epoch over it, but claims the same epoch again an election timeout on."""
    a = Election("a", CFG, 3, now=0.0)
    first = claim(a, 5.0)
    claimed_at = 5.0 + CFG.heartbeat_interval + CFG.tick_interval
    assert first.effects[0] == Persist(4) and a.echo_pending
    a.on_persist_failed(4)
    assert not a.echo_pending and a.epoch == 3 and a.acting_epoch is None
    t = claimed_at
    while t < claimed_at + CFG.election_timeout - 2 * CFG.tick_interval:
        assert ticked(a, t, lambda n: None, True).effects == [], t
        t += CFG.tick_interval
    again = claim(a, claimed_at + CFG.election_timeout)
    assert again.effects[0] == Persist(4) and again.effects[1].epoch == 4
    assert claimed(a, "a", 4, 20.0).elected == 4, "the disk took it this time, and the echo elects"


def test_an_epoch_learned_but_not_stored_is_still_followed() -> None:
    a = Election("a", CFG, 3, now=0.0)
    assert announced(a, 5, "b").effects == [Persist(5)]
    a.on_persist_failed(5)
    assert a.epoch == 5 and a.coordinator == "b"
    assert claimed(a, "c", 4, 1.0).effects == [], "a claim below the epoch in memory stays stale"


def test_stale_claims_and_announcements_are_ignored() -> None:
    a = Election("a", CFG, 7, now=0.0)
    assert claimed(a, "b", 6, 1.0).effects == []
    assert announced(a, 5, "b").effects == []
    assert a.coordinator is None


def test_no_claim_while_the_coordinator_lives_or_before_startup_wait() -> None:
    a = Election("a", CFG, 0, now=0.0)
    assert ticked(a, 0.1, lambda n: None, True).effects == []  # still listening
    announced(a, 1, "b")
    assert ticked(a, 10.0, lambda n: "alive", True).effects == []
    assert ticked(a, 11.0, lambda n: "suspect", True).effects == []  # suspect is not dead
    assert claim(a, 12.0, lambda n: "dead").effects[0] == Persist(2)


def test_standbys_claim_first_in_the_announced_order() -> None:
    def c_dead(n: str) -> str:
        return "dead" if n == "c" else "alive"

    b = Election("b", CFG, 0, now=0.0)
    announced(b, 1, "c", ("a", "b"))
    assert ticked(b, 5.0, c_dead, True).effects == []  # a goes first
    assert ticked(b, 5.0 + CFG.heartbeat_interval / 2, c_dead, True).effects[0] == Persist(2)
    # A node that is no standby waits for them all and then an election timeout (their time to win), and
    # claims only once it follows everything.
    d = Election("d", CFG, 0, now=0.0)
    announced(d, 1, "c", ("a", "b"))
    assert ticked(d, 5.0, c_dead, False).effects == [] and not d.wants_to_claim
    assert ticked(d, 5.0 + CFG.election_timeout, c_dead, False).effects == [] and not d.wants_to_claim
    later = 5.0 + CFG.heartbeat_interval * 2 + CFG.election_timeout
    assert ticked(d, later, c_dead, False).effects == [] and d.wants_to_claim
    assert ticked(d, later + CFG.tick_interval, c_dead, True).effects[0] == Persist(2)


def test_a_member_that_reconnects_within_the_failure_timeout_never_dies() -> None:
    m = Membership("self", CFG)
    caps = simulated_capabilities("h", cores=2, memory_mb=1024, disk_free_gb=1.0)
    hb = Heartbeat("p", caps, 1, 0, 0.0, 512, 1)
    m.on_heartbeat("p", hb, 0.0)
    assert [x.state for x in m.take_changes()] == ["alive"]  # a new member
    m.on_gone("p", "connection lost", 0.5)
    assert [x.state for x in m.take_changes()] == ["suspect"]
    m.tick(1.0)
    m.on_heartbeat("p", hb, 2.0)
    assert [x.state for x in m.take_changes()] == ["alive"]
    for t in (2.5, 3.0, 4.0):
        m.tick(t)
        m.on_heartbeat("p", hb, t)
    assert m.state_of("p") == "alive"
    m.tick(4.0 + CFG.failure_timeout)
    assert m.state_of("p") == "dead"


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(2, 6),
    script=st.lists(
        st.tuples(st.sampled_from(["tick", "deliver"]), st.integers(0, 5), st.floats(0, 3)), max_size=80
    ),
)
def test_at_most_one_coordinator_per_epoch(n: int, script: list[tuple[str, int, float]]) -> None:
    """Nodes claim when they like; the broker orders claims; each node reads that order at its own pace."""
    ids = [f"n{i}" for i in range(n)]
    nodes = {i: Election(i, CFG, 0, now=0.0) for i in ids}
    log: list[tuple[str, int]] = []
    cursor = dict.fromkeys(ids, 0)
    winners: dict[int, set[str]] = {}
    now = 0.0
    for action, k, dt in script:
        node_id = ids[k % n]
        e = nodes[node_id]
        now += dt
        if action == "tick":
            for effect in ticked(e, now, lambda _: "dead", True).effects:
                if isinstance(effect, Publish) and isinstance(effect.body, Claim):
                    log.append((node_id, effect.body.epoch))
        elif cursor[node_id] < len(log):
            sender, epoch = log[cursor[node_id]]
            cursor[node_id] += 1
            claimed(e, sender, epoch, now)
        e.validate()
        for other_id, other in nodes.items():
            if other.acting_epoch is not None:
                winners.setdefault(other.acting_epoch, set()).add(other_id)
    assert all(len(w) == 1 for w in winners.values()), winners


def test_a_claimant_stays_claiming_until_its_claim_comes_back() -> None:
    """Its node follows the whole job log meanwhile: the echo may still make it the winner."""
    a = Election("a", CFG, 0, now=0.0)
    claim(a, 5.0)
    announced(a, 0, "b")  # a coordinator of an older epoch shows up: no longer its turn to claim
    assert a.claiming
    assert claimed(a, "a", 1, 6.0).elected == 1
    b = Election("b", CFG, 0, now=0.0)
    claim(b, 5.0)
    claimed(b, "c", 2, 5.5)  # a higher claim: b's own, when it comes back, is ignored
    b.tick(5.6, lambda n: "alive", True)
    assert not b.claiming


def test_a_restarted_coordinator_claims_at_once() -> None:
    """Its own retained announcement names it, and its heartbeats make everyone else see the coordinator
    alive: it is the only one who can claim, so it does not wait behind the standbys."""
    a = Election("a", CFG, 1, now=0.0)
    announced(a, 1, "a", ("b", "c"))
    start = a.startup_wait + CFG.tick_interval
    assert ticked(a, start, lambda n: "alive", True).effects[0] == Persist(2)


def _first_claim_at(node_id: str, roster_size: int) -> float:
    e = Election(node_id, CFG, 0, now=0.0)
    e.roster_size = roster_size
    t = 0.0
    while not ticked(e, t, lambda n: None, True).effects:
        t += CFG.tick_interval / 4
    return t - e.startup_wait


def test_turns_to_claim_spread_with_the_roster_size() -> None:
    """Without standbys, a hundred members must not claim within one heartbeat interval: each claim
    makes its claimant follow every heartbeat and the job log. Turns spread over one interval per
    `CLAIMANTS_PER_INTERVAL` nodes of the roster."""
    ids = [f"n-{i:04x}" for i in range(100)]
    small = [_first_claim_at(i, 0) for i in ids]
    large = [_first_claim_at(i, 100) for i in ids]
    hb, step = CFG.heartbeat_interval, CFG.tick_interval / 4
    assert max(small) <= hb + step
    width = hb * 100 / CLAIMANTS_PER_INTERVAL
    assert max(large) <= width + step and max(large) > width / 2
    # About CLAIMANTS_PER_INTERVAL members reach their turn in any one heartbeat interval (at most twice).
    assert max(sum(t <= x < t + hb for x in large) for t in large) <= 2 * CLAIMANTS_PER_INTERVAL
