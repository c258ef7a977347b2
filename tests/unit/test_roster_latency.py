"""A member's link estimate is the floor of its recent attempts' time outside the task, not an average."""

from __future__ import annotations

from test_placement_constraints import hb

from swarm.core.config import CoreConfig
from swarm.core.roster import LATENCY_WINDOW_S, Roster
from swarm.messages import Requirements


def roster_of(*names: str) -> Roster:
    roster = Roster(CoreConfig())
    for name in names:
        roster.upsert(name, hb(name), 0.0, held=0, exclusive_held=False)
    return roster


def latency(roster: Roster, name: str) -> float:
    member = roster.member(name)
    assert member is not None
    return member.latency_ms


def test_a_burst_of_queueing_does_not_outlive_one_quick_attempt() -> None:
    roster = roster_of("n-a", "n-b")
    roster.observe_latency("n-a", 1.0, now=0.0)
    for spent in (9.0, 8.0, 0.4, 9.5):  # "n-b" queued most of a burst's attempts
        roster.observe_latency("n-b", spent, now=0.1)
    assert latency(roster, "n-b") == 0.4
    assert latency(roster, "n-a") == 1.0
    placed = roster.place(Requirements())
    assert placed is not None and placed.node_id == "n-b"  # the shorter link, all else equal


def test_the_floor_is_that_of_the_last_one_to_two_windows() -> None:
    roster = roster_of("n-a")
    roster.observe_latency("n-a", 0.4, now=0.0)
    roster.observe_latency("n-a", 5.0, now=LATENCY_WINDOW_S + 1)  # a new window; the last one counts
    assert latency(roster, "n-a") == 0.4
    roster.observe_latency("n-a", 6.0, now=2 * LATENCY_WINDOW_S + 2)  # the link got slower for good
    assert latency(roster, "n-a") == 5.0


def test_a_member_seen_again_keeps_its_estimate_and_one_never_measured_has_none() -> None:
    roster = roster_of("n-a", "n-b")
    roster.observe_latency("n-a", 2.5, now=0.0)
    roster.remove("n-a")
    roster.upsert("n-a", hb("n-a"), 1.0, held=0, exclusive_held=False)
    assert latency(roster, "n-a") == 2.5 and latency(roster, "n-b") == 0.0
    roster.observe_latency("n-a", -1.0, now=1.0)  # the clocks of two machines apart: never below zero
    assert latency(roster, "n-a") == 0.0


def test_an_estimate_no_attempt_refreshed_for_two_windows_is_forgotten() -> None:
    """A member measured once while cold (its first attempt started a worker) and then never chosen again
    would keep that estimate, and lose every tie, for good."""
    roster = roster_of("n-a", "n-b")
    roster.observe_latency("n-a", 4.0, now=0.0)
    roster.observe_latency("n-b", 1.2, now=0.0)
    for t in range(1, int(2 * LATENCY_WINDOW_S)):
        roster.observe_latency("n-b", 1.2, now=float(t))  # n-b gets every attempt meanwhile
        roster.upsert("n-a", hb("n-a"), float(t), held=0, exclusive_held=False)
        assert latency(roster, "n-a") == 4.0
    roster.upsert("n-a", hb("n-a"), 2 * LATENCY_WINDOW_S, held=0, exclusive_held=False)
    assert latency(roster, "n-a") == 0.0
    placed = roster.place(Requirements())
    assert placed is not None and placed.node_id == "n-a"  # measured again by its next attempt
    roster.observe_latency("n-a", 0.5, now=2 * LATENCY_WINDOW_S + 1)  # afresh: the old 4.0 is gone
    assert latency(roster, "n-a") == 0.5
