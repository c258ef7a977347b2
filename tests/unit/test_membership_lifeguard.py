"""A slow observer (issue 16): the node's own loop lag makes it patient instead of declaring others dead."""

from __future__ import annotations

import itertools
import random

import pytest

from swarm.core.config import CoreConfig
from swarm.core.election import Election
from swarm.core.events import MessageReceived, Publish, Tick
from swarm.core.membership import HEARTBEATS_PER_S, MAX_HEALTH, MAX_PACE, Membership, paced_interval
from swarm.core.node import DeviceStatus, NodeMachine
from swarm.devices.profiles import simulated_capabilities
from swarm.messages import Claim, CoordinatorAnnounce, Envelope, Heartbeat, NodeGone
from swarm.runtime.shell import RECONNECT_CAP_S, RECONNECT_FLOOR_S, reconnect_delay
from swarm.topics import EVERY_HEARTBEAT
from tests.unit.test_election import announced, claimed, ticked

CFG = CoreConfig()
CAPS = simulated_capabilities("h", cores=2, memory_mb=1024, disk_free_gb=1.0)
HB = Heartbeat("p", CAPS, 1, 0, 0.0, 512, 1)


def _table(*ids: str) -> Membership:
    m = Membership("self", CFG)
    for node_id in ids:
        m.on_heartbeat(node_id, HB, 0.0)
    m.take_changes()
    return m


def test_a_healthy_node_keeps_the_plain_timeouts() -> None:
    m = _table("p")
    m.note_lag(0.01, 0.0)
    assert m.patience == pytest.approx(1.02)
    m.note_lag(0.0, 10.0)
    assert m.patience == 1.0
    m.tick(CFG.failure_timeout - 0.01)
    assert m.state_of("p") == "suspect"
    m.tick(CFG.failure_timeout)
    assert m.state_of("p") == "dead"


def test_time_spent_catching_up_is_not_counted_as_silence() -> None:
    """The tick was due at 1.0 but handled at 9.0: what arrived before 1.0 has been handled, no more."""
    m = _table("p")
    m.note_lag(8.0, 9.0)
    m.tick(9.0)
    assert m.take_changes() == []
    assert m.state_of("p") == "alive"


def test_a_lagging_node_waits_longer_before_declaring_anyone_dead() -> None:
    m = _table("p", "q")
    m.note_lag(1.0, 0.5)  # one second late: two heartbeat intervals, so three times the patience
    assert m.patience == pytest.approx(3.0)
    m.lag = 0.0  # the next tick is on time, but the health score stays up
    later = 3 * (2 * CFG.heartbeat_interval + CFG.tick_interval) + 0.1  # suspect, not yet dead
    assert later > CFG.failure_timeout
    m.tick(later)
    assert m.state_of("p") == "suspect"
    m.on_heartbeat("q", HB, later)
    assert m.state_of("q") == "alive"


def test_health_is_capped_and_recovers_with_timely_ticks() -> None:
    m = Membership("self", CFG)
    m.note_lag(60.0, 0.0)
    assert m.health == MAX_HEALTH
    m.note_lag(0.0, 3.0)
    assert m.health == pytest.approx(MAX_HEALTH - 3.0)
    m.note_lag(0.0, 100.0)
    assert m.health == 0.0 and m.patience == 1.0


def test_a_negative_lag_counts_as_none() -> None:
    m = Membership("self", CFG)
    m.note_lag(-5.0, 1.0)
    assert m.lag == 0.0 and m.health == 0.0


def test_a_last_will_confirms_the_suspicion_so_death_comes_at_the_plain_timeout() -> None:
    """The broker saw the connection drop: an independent witness, so the lag does not stretch it."""
    m = _table("p", "q")
    m.note_lag(2.0, 0.0)
    m.lag = 0.0
    m.on_gone("p", "connection lost", 0.1)
    m.tick(CFG.failure_timeout)
    assert (m.state_of("p"), m.state_of("q")) == ("dead", "alive")
    # A heartbeat after the will withdraws it: the member is alive, and plain silence rules again.
    m.on_gone("q", "connection lost", 3.5)
    m.on_heartbeat("q", HB, 3.6)
    m.tick(3.6 + CFG.failure_timeout)
    assert m.state_of("q") != "dead"


def _dead(node_id: str) -> str | None:
    return "dead" if node_id == "c" else "alive"


def _first_claim(e: Election, start: float, patience: float, until: float) -> float | None:
    t = start
    while t <= until:
        if ticked(e, t, _dead, True, patience).effects:
            return t
        t = round(t + CFG.tick_interval, 6)
    return None


def test_a_patient_node_takes_its_turn_that_many_times_later() -> None:
    quick, slow = Election("d", CFG, 0, now=0.0), Election("d", CFG, 0, now=0.0)
    for e in (quick, slow):
        announced(e, 1, "c", ("a", "b"))
    at_once = _first_claim(quick, 5.0, 1.0, 30.0)
    later = _first_claim(slow, 5.0, 4.0, 30.0)
    assert at_once is not None and later is not None
    assert later - 5.0 >= 4 * (at_once - 5.0) - CFG.tick_interval


def test_a_claimant_waits_for_its_claim_to_come_back_before_claiming_again() -> None:
    """Claiming the next epoch before the echo only deposes whoever won meanwhile."""
    e = Election("a", CFG, 0, now=0.0)
    first = _first_claim(e, 5.0, 2.0, 10.0)  # its claim for epoch 1
    assert first is not None and e.echo_pending
    timeout = CFG.election_timeout * 2.0
    assert not ticked(e, first + timeout + 0.1, _dead, True, 2.0).effects  # the echo is only late
    assert ticked(e, first + 2 * timeout, _dead, True, 2.0).effects  # lost after all: claim again
    # A node on time waits as long for its echo: the broker may be the slow part.
    h = Election("a", CFG, 0, now=0.0)
    first = _first_claim(h, 5.0, 1.0, 10.0)
    assert first is not None
    assert not ticked(h, first + CFG.election_timeout, _dead, True).effects
    assert ticked(h, first + 2 * CFG.election_timeout, _dead, True).effects
    # Once the echo came back (b won the epoch, and died), the plain election timeout counts.
    w = Election("a", CFG, 0, now=0.0)
    first = _first_claim(w, 5.0, 1.0, 10.0)
    assert first is not None
    claimed(w, "b", 1, first + 0.1)
    claimed(w, "a", 1, first + 0.2)
    assert not w.echo_pending
    assert ticked(w, first + CFG.election_timeout, lambda node_id: "dead", True).effects


def test_a_claim_seen_holds_others_back_for_the_patient_failure_timeout() -> None:
    e = Election("z", CFG, 1, now=0.0)
    announced(e, 1, "c")
    claimed(e, "x", 2, 10.0)  # x claims; z does not follow x yet (state None)
    unknown = {"c": "dead"}
    assert not ticked(e, 10.0 + CFG.failure_timeout * 2 - 0.1, unknown.get, True, 2.0).effects
    assert not e.wants_to_claim


def _node(node_id: str = "a") -> NodeMachine:
    status = DeviceStatus(CAPS, 0.1, 2048)
    return NodeMachine(node_id, node_id, CFG, random.Random(0), lambda spec: None, status, 0, 0.0)


def _msg(
    topic: str, sender: str, body: Heartbeat | NodeGone | CoordinatorAnnounce | Claim
) -> MessageReceived:
    return MessageReceived(topic, Envelope(1, "c", sender, 1, f"{sender}-{topic}", body))


def test_a_node_told_its_lag_does_not_fail_over_a_coordinator_it_is_late_to_hear() -> None:
    node = _node()
    node.handle_many([_msg("coord", "c", CoordinatorAnnounce(1, "c")), _msg("node/c/hb", "c", HB)], 1.0)
    node.note_loop_lag(6.0, 8.0)  # the loop was stalled: the tick due at 2.0 is handled at 8.0
    effects = node.handle(Tick(), 8.0)
    assert node.membership.state_of("c") == "alive"
    assert not [e for e in effects if isinstance(e, Publish) and isinstance(e.body, Claim)]


def test_own_heartbeats_late_through_the_broker_make_a_node_patient() -> None:
    """A node whose loop is on time but whose broker is starved sees everyone late: its own heartbeats,
    timed on their way back, raise its patience (only those sent once it follows every heartbeat)."""
    node, now = _node(), 0.0
    sent: list[Heartbeat] = []
    while not sent:
        following = EVERY_HEARTBEAT in node.subscriptions()
        now = round(now + CFG.tick_interval, 6)
        effects = node.handle(Tick(), now)
        sent = [e.body for e in effects if isinstance(e, Publish) and isinstance(e.body, Heartbeat)]
        sent = sent if following else []
    node.handle(_msg("node/a/hb", "a", sent[0]), now + 3 * CFG.heartbeat_interval)
    assert node.membership.patience == pytest.approx(4.0)
    node.handle(_msg("node/a/hb", "a", sent[0]), now + 3 * CFG.heartbeat_interval)  # counted once
    node.note_loop_lag(0.0, now + 3 * CFG.heartbeat_interval + 1.0)  # a timely tick: a point recovered
    assert node.membership.patience == pytest.approx(3.0)


def test_member_changes_are_summed_up_in_one_line() -> None:
    node, now = _node(), 0.0
    claims: list[Claim] = []
    while not claims:  # no coordinator: the node claims, and its echo makes it act (it follows everyone)
        now += CFG.tick_interval
        claims = [
            e.body for e in node.handle(Tick(), now) if isinstance(e, Publish) and isinstance(e.body, Claim)
        ]
    node.handle(_msg("election", "a", claims[0]), now)
    assert node.scheduler is not None
    node.take_story()
    node.handle_many([_msg(f"node/m{i}/hb", f"m{i}", HB) for i in range(12)], now)
    node.handle_many([_msg(f"node/m{i}/hb", f"m{i}", NodeGone("connection lost")) for i in range(12)], now)
    node.handle(Tick(), now + 20.0)
    entries, _ = node.take_story()
    lines = [e.message for e in entries if e.level != "debug" and "member" in e.message]
    assert not [line for line in lines if line.startswith("member m")]
    assert any("12 suspect" in line for line in lines), lines
    assert len(lines) <= 2, lines


def test_reconnect_backoff_is_jittered_and_bounded() -> None:
    rng = random.Random(1)
    first = [reconnect_delay(1, rng) for _ in range(200)]
    assert min(first) >= RECONNECT_FLOOR_S and max(first) <= RECONNECT_FLOOR_S + 1.0
    assert len({round(d, 3) for d in first}) > 150  # spread out, not in lockstep
    late = [reconnect_delay(50, rng) for _ in range(200)]
    assert max(late) <= RECONNECT_FLOOR_S + RECONNECT_CAP_S
    assert sum(late) / len(late) > RECONNECT_CAP_S / 4


def test_a_member_that_reports_itself_late_is_given_its_own_patience() -> None:
    """A member whose heartbeat says its own loop (or broker) is late is allowed that many times the
    usual silence; a value no node could have reported counts as 1, and a will still counts at once."""
    cfg = CoreConfig()
    caps = simulated_capabilities("x")
    for reported, dead_by in ((4.0, False), (1.0, True), (1e9, True)):
        m = Membership("self", cfg)
        m.on_heartbeat("late", Heartbeat("late", caps, 1, 0, 0.1, 2048, 1, patience=reported), 0.0)
        m.tick(cfg.failure_timeout * 2)
        assert (m.state_of("late") == "dead") == dead_by, reported


def test_heartbeats_are_paced_by_the_cluster_size() -> None:
    """All members together send about `HEARTBEATS_PER_S` heartbeats a second, however many they are
    (within `MAX_PACE`); a small cluster keeps the configured interval."""
    base = CFG.heartbeat_interval
    for nodes in (1, 10, 25, 50, 100, 300, 500, 5000):
        interval = paced_interval(CFG, nodes)
        rate = nodes / interval
        assert base <= interval <= base * MAX_PACE
        assert (
            rate == pytest.approx(nodes / base)
            or rate == pytest.approx(HEARTBEATS_PER_S)
            or (interval == base * MAX_PACE)
        )
    assert paced_interval(CFG, 20) == base
    assert paced_interval(CFG, 100) == pytest.approx(2.0)


def test_a_paced_member_is_judged_by_its_own_interval_but_its_will_is_not_slowed() -> None:
    """A member heartbeating every 2 s (four times the configured 0.5 s) is suspect and dead after four
    times the usual silence; its will still makes it dead one plain failure timeout after it last spoke;
    an interval no pacing can make counts as the configured one."""
    paced = Heartbeat("p", CAPS, 1, 0, 0.0, 512, 1, interval=4 * CFG.heartbeat_interval)
    m = Membership("self", CFG)
    m.on_heartbeat("p", paced, 0.0)
    m.tick(3 * CFG.heartbeat_interval)
    assert m.state_of("p") == "alive"
    m.tick(4 * (2 * CFG.heartbeat_interval + CFG.tick_interval))
    assert m.state_of("p") == "suspect"
    m.tick(4 * CFG.failure_timeout - 0.01)
    assert m.state_of("p") == "suspect"
    m.tick(4 * CFG.failure_timeout)
    assert m.state_of("p") == "dead"

    m = Membership("self", CFG)
    m.on_heartbeat("p", paced, 0.0)
    m.on_gone("p", "connection lost", 0.5)
    m.tick(CFG.failure_timeout)
    assert m.state_of("p") == "dead"

    for bogus in (1e9, -1.0, CFG.heartbeat_interval / 10):
        m = Membership("self", CFG)
        m.on_heartbeat("p", Heartbeat("p", CAPS, 1, 0, 0.0, 512, 1, interval=bogus), 0.0)
        m.tick(CFG.failure_timeout)
        assert m.state_of("p") == "dead", bogus


def test_a_node_paces_its_heartbeats_and_reports_by_the_roster() -> None:
    """A node of a 100-node roster heartbeats every 2 s, says so in its heartbeat, and sends it lossy
    (the broker may drop a heartbeat a follower is behind on: the next one replaces it)."""
    node = _node("me")
    node.set_roster_size(100)
    sent: list[tuple[float, Publish]] = []
    t = 0.0
    while t < 10.0:
        for effect in node.handle(Tick(), t):
            if isinstance(effect, Publish) and isinstance(effect.body, Heartbeat):
                sent.append((t, effect))
        t += CFG.tick_interval
    times = [at for at, _ in sent]
    assert 5 <= len(times) <= 6, times
    assert all(b - a == pytest.approx(2.0, abs=CFG.tick_interval * 1.5) for a, b in itertools.pairwise(times))
    assert all(p.lossy and p.retain and p.body.interval == pytest.approx(2.0) for _, p in sent)  # type: ignore[union-attr]
