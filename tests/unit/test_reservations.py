"""Reservations in the coordinator: slots held for a run until it starts them, expires, or is cancelled."""

from __future__ import annotations

import random

from test_placement_constraints import assigned, member, result, run, task
from test_scheduler import echo

from swarm.core.config import CoreConfig
from swarm.core.events import Publish
from swarm.core.membership import Member
from swarm.core.replica import Replica
from swarm.core.reservations import CLOCK_SLACK_S, MAX_HOLD_S, Reservations
from swarm.core.scheduler import Scheduler
from swarm.messages import (
    RESERVATION_KIND,
    Assign,
    Hold,
    JobRejected,
    JobState,
    Requirements,
    SubmitJob,
    TaskSpec,
)

OWNER = {"submitted_by": "ana", "role": "submitter"}


def sched() -> Scheduler:
    return Scheduler("c", 1, CoreConfig(), random.Random(0), lambda spec: None)


def chain(job_id: str = "run") -> SubmitJob:
    """A run of two steps pinned to a, the second after the first."""
    pin = Requirements(pin=("a",))
    first = TaskSpec(f"{job_id}.s0", "echo", {}, requirements=pin)
    second = TaskSpec(f"{job_id}.s1", "echo", {}, after=(first.task_id,), requirements=pin)
    return SubmitJob(job_id, (first, second), meta={"allocation": "alloc-1"}, **OWNER)  # type: ignore[arg-type]


def reservation(res_id: str = "alloc-1", expires: float = 100.0, **holds: int) -> SubmitJob:
    held = tuple(Hold(node, n) for node, n in sorted((holds or {"a": 1}).items()))
    return SubmitJob(res_id, (), kind=RESERVATION_KIND, holds=held, expires=expires, **OWNER)


def others(n: int, job_id: str = "other") -> SubmitJob:
    return SubmitJob(job_id, tuple(task(f"{job_id}{i}") for i in range(n)), **OWNER)


def the_run(job_id: str = "run", res_id: str = "alloc-1", n: int = 1, node: str = "a") -> SubmitJob:
    tasks = tuple(task(f"{job_id}.s{i}", pin=(node,)) for i in range(n))
    return SubmitJob(job_id, tasks, meta={"allocation": res_id}, **OWNER)


def finished(effects: list[object]) -> list[str]:
    return [e.body.job_id for e in effects if isinstance(e, Publish) and isinstance(e.body, JobState)]


def test_a_reservation_keeps_other_work_out_of_the_slots_it_holds() -> None:
    s = sched()
    a, b = member("a", slots=2), member("b", slots=2)
    s.on_submit(reservation(a=2), 0.0)
    s.on_submit(others(6), 0.0)
    placed = assigned(run(s, [a, b], 0.0))
    assert placed and set(placed.values()) == {"b"}  # nothing on a, whose two slots are held
    # One held slot of two: other work gets the free one only, nothing prefetched behind it.
    s2 = sched()
    s2.on_submit(reservation(a=1), 0.0)
    s2.on_submit(others(6), 0.0)
    assert list(assigned(run(s2, [a], 0.0)).values()) == ["a"]


def test_the_run_that_names_it_starts_in_the_held_slots_ahead_of_the_queue() -> None:
    s = sched()
    a = member("a", slots=1)
    s.on_submit(reservation(a=1), 0.0)
    s.on_submit(others(3), 0.0)
    assert assigned(run(s, [a], 0.0)) == {}
    s.on_submit(the_run(), 1.0)
    effects = run(s, [a], 1.0)
    batch = [e.body for e in effects if isinstance(e, Publish) and isinstance(e.body, Assign)]
    # Its step goes first, into the held slot; the others queue behind it once nothing is held.
    assert [x.task_id for x in batch[0].tasks][:2] == ["run.s0", "other0"]
    assert s.reservations.get("alloc-1") is not None and s.reservations.get("alloc-1").run == "run"  # type: ignore[union-attr]
    # Its task took the held slot over: counted once, as held, no longer as reserved.
    assert s._load("a")[2] == 0
    # When the run ends, so does the reservation (its final record).
    s.on_results("a", [result("run.s0", 1, job="run")], 2.0)
    echo(s, run(s, [a], 2.0))
    assert "alloc-1" in finished(run(s, [a], 2.1)) and "alloc-1" not in s.reservations


def test_a_run_keeps_the_slots_for_steps_that_have_not_started() -> None:
    s = sched()
    a = member("a", slots=2)
    s.on_submit(reservation(a=2), 0.0)
    s.on_submit(chain(), 0.0)
    s.on_submit(others(4), 0.0)
    placed = assigned(run(s, [a], 0.0))
    # s0 runs in one held slot; s1 waits for it and keeps the other: nothing else gets in.
    assert placed == {"run.s0": "a"}
    assert s._load("a") == (1, False, 1)


def test_expiry_releases_the_slots() -> None:
    s = sched()
    a = member("a", slots=1)
    s.on_submit(reservation(a=1, expires=50.0), 0.0)
    s.on_submit(others(1), 0.0)
    assert assigned(run(s, [a], 0.0)) == {}
    s.tick(49.0)
    assert assigned(run(s, [a], 49.0)) == {}
    s.tick(50.0)
    effects = run(s, [a], 50.0)
    assert finished(effects) == ["alloc-1"] and assigned(effects) == {"other0": "a"}
    assert s.take_closed() == ["alloc-1"]  # the node marks it finished in its replica


def test_cancel_ends_it_for_its_owner_only() -> None:
    s = sched()
    s.on_submit(reservation(a=1), 0.0)
    assert s.on_cancel("alloc-1", "bob", "submitter", 1.0) is not None
    assert s.on_cancel("alloc-1", "ana", "submitter", 1.0) is None
    assert "alloc-1" not in s.reservations


def test_bad_reservations_are_rejected_with_the_reason() -> None:
    s = sched()
    s.on_submit(reservation(expires=10.0 + MAX_HOLD_S + CLOCK_SLACK_S + 1), 10.0)
    s.on_submit(SubmitJob("x", (), kind=RESERVATION_KIND, holds=(Hold("a", 0),), expires=5.0, **OWNER), 0.0)
    viewer = SubmitJob("v", (), kind=RESERVATION_KIND, holds=(Hold("a", 1),), expires=5.0, role="viewer")
    s.on_submit(viewer, 0.0)
    reasons = [
        e.body.reason for e in s.drain(0.0) if isinstance(e, Publish) and isinstance(e.body, JobRejected)
    ]
    assert len(reasons) == 3 and "longer than" in reasons[0] and "fewer than one" in reasons[1]
    assert "may not reserve" in reasons[2] and not s.reservations


def test_a_successor_holds_the_same_slots_from_the_retained_specs() -> None:
    # What a standby's replica holds: the reservation's spec and the run's, which claimed it.
    replica = Replica()
    replica.on_spec(reservation(a=2))
    replica.on_spec(chain())
    s = sched()
    for job, committed, spent in replica.active():  # the run's id sorts after the reservation's
        s.adopt(job, committed, 0.0, spent)
    res = s.reservations.get("alloc-1")
    assert res is not None and res.run == "run"
    s.on_submit(others(3), 0.0)
    placed = assigned(run(s, [member("a", slots=2)], 0.0))
    assert placed == {"run.s0": "a"} and s._load("a") == (1, False, 1)
    # A reservation that expired while no coordinator acted ends at the successor's first tick.
    late = sched()
    late.adopt(reservation(expires=5.0), {}, 10.0)
    late.tick(10.0)
    assert finished(late.drain(10.0)) == ["alloc-1"]


def test_the_table_derives_held_slots_from_the_run_tasks() -> None:
    table = Reservations()
    table.add(reservation(a=3, b=1))
    assert (table.held("a", lambda t: None), table.held("b", lambda t: None)) == (3, 1)
    assert table.claim("alloc-1", the_run(n=2))
    states = {"run.s0": "running", "run.s1": "queued"}
    assert table.held("a", states.get) == 1 and table.held("b", states.get) == 0
    assert not table.claim("alloc-1", the_run("second"))  # one run per reservation
    table.remove("alloc-1")
    assert table.nodes() == [] and not table


def test_members_lost_and_found_keep_their_reservations() -> None:
    s = sched()
    a = member("a", slots=1)
    s.on_submit(reservation(a=1), 0.0)
    run(s, [a], 0.0)
    s.on_member(Member("a", None, 1.0, state="suspect"), 1.0)
    s.on_submit(others(1), 1.0)
    assert assigned(run(s, [a], 2.0)) == {}  # back alive: still held
