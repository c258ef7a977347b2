"""Labels, taints, tolerations, anti-affinity, pinning and preemption: placement and the pure scheduler."""

from __future__ import annotations

import random

import pytest

from swarm.config import load_config
from swarm.core.config import CoreConfig, PlacementWeights
from swarm.core.events import Effect, Publish
from swarm.core.membership import Member
from swarm.core.placement import Candidate, choose, unmet, unmet_by_all
from swarm.core.scheduler import Scheduler
from swarm.devices.capabilities import (
    Capabilities,
    Taint,
    Toleration,
    automatic_taints,
    parse_label,
    parse_taint,
)
from swarm.devices.probe import refresh_capabilities, temperature_c
from swarm.devices.profiles import simulated_capabilities
from swarm.errors import ConfigError
from swarm.messages import (
    Assign,
    CancelAttempt,
    Heartbeat,
    Requirements,
    RetryPolicy,
    SubmitJob,
    TaskResult,
    TaskSpec,
)

W = PlacementWeights()


def caps(
    name: str, labels: dict[str, str] | None = None, taints: tuple[Taint, ...] = (), **kw: object
) -> Capabilities:
    return simulated_capabilities(
        name, disk_free_gb=10.0, labels=tuple(sorted((labels or {}).items())), taints=taints, **kw
    )


def hb(name: str, slots: int = 2, **kw: object) -> Heartbeat:
    return Heartbeat(name, caps(name, **kw), slots, 0, 0.0, 2048, 1)  # type: ignore[arg-type]


def cand(name: str, **kw: object) -> Candidate:
    return Candidate(name, hb(name, **kw), limit=2)  # type: ignore[arg-type]


NOSCHED = Taint("dedicated", "high-priority", "NoSchedule")


# --- the values -------------------------------------------------------------------------------------


def test_labels_and_taints_parse_and_refuse_bad_text() -> None:
    assert parse_label("zone=east") == ("zone", "east")
    assert parse_taint("dedicated=gpu:NoSchedule") == Taint("dedicated", "gpu", "NoSchedule")
    assert parse_taint("hot:PreferNoSchedule") == Taint("hot", "", "PreferNoSchedule")
    assert parse_taint("plain") == Taint("plain", "", "NoSchedule")
    for bad in ("zone", "=east", "zo ne=east"):
        with pytest.raises(ValueError):
            parse_label(bad)
    with pytest.raises(ValueError, match="set by the node itself"):
        parse_taint("swarm.io/battery-low:NoSchedule")
    with pytest.raises(ValueError, match="Equal or Exists"):
        Toleration("k", "Maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="without a key"):
        Toleration("", "Equal", "v")
    with pytest.raises(ValueError, match="sorted by key"):
        simulated_capabilities("h", cores=2, memory_mb=1, disk_free_gb=1.0, labels=(("b", "1"), ("a", "2")))


def test_tolerations_match_by_key_value_and_effect() -> None:
    assert Toleration("dedicated", "Equal", "high-priority", "NoSchedule").matches(NOSCHED)
    assert not Toleration("dedicated", "Equal", "low", "NoSchedule").matches(NOSCHED)
    assert Toleration("dedicated", "Exists").matches(NOSCHED)
    assert not Toleration("dedicated", "Exists", effect="PreferNoSchedule").matches(NOSCHED)
    assert Toleration("", "Exists").matches(NOSCHED)


def test_automatic_taints_follow_battery_and_temperature(tmp_path: object) -> None:
    assert automatic_taints(15.0, False, None) == (Taint("swarm.io/battery-low", "", "NoSchedule"),)
    assert automatic_taints(15.0, True, None) == ()
    assert automatic_taints(80.0, False, 90.0) == (Taint("swarm.io/thermal-hot", "", "PreferNoSchedule"),)
    assert automatic_taints(None, None, 40.0) == ()
    # A refresh keeps the owner's taints and recomputes the automatic ones.
    stale = caps("a", taints=(NOSCHED, Taint("swarm.io/battery-low", "", "NoSchedule")))
    fresh = refresh_capabilities(stale, None, battery=True)
    assert NOSCHED in fresh.taints


def test_thermal_zones_are_read_in_millidegrees(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    for i, value in enumerate(("45000", "87500", "-1000", "junk")):
        (root / f"thermal_zone{i}").mkdir()
        (root / f"thermal_zone{i}" / "temp").write_text(value)
    assert temperature_c(root) == 87.5
    assert temperature_c(root / "none") is None


def test_join_labels_and_taints_come_from_flags_or_toml(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    config = load_config(None, labels=["zone=east", "gpu=true"], taints=["dedicated=hp:NoSchedule"])
    assert config.labels == (("gpu", "true"), ("zone", "east"))
    assert config.taints == (Taint("dedicated", "hp", "NoSchedule"),)
    toml = Path(str(tmp_path)) / "c.toml"
    toml.write_text('[node]\nlabels = {zone = "west"}\ntaints = ["hot:PreferNoSchedule"]\n')
    config = load_config(toml)
    assert config.labels == (("zone", "west"),)
    assert config.taints == (Taint("hot", "", "PreferNoSchedule"),)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, labels=["zone"])
    with pytest.raises(ConfigError, match=r"swarm\.io/"):
        load_config(None, taints=["swarm.io/thermal-hot:NoSchedule"])


# --- placement --------------------------------------------------------------------------------------


def test_required_labels_must_all_match() -> None:
    req = Requirements(labels=(("security", "public"), ("zone", "east")))
    assert unmet(req, "a", hb("a", labels={"zone": "east", "security": "public", "x": "y"})) is None
    assert unmet(req, "b", hb("b", labels={"zone": "east"})) == "label security=public"
    assert unmet(req, "c", hb("c", labels={"zone": "west", "security": "public"})) == "label zone=east"
    assert unmet_by_all(req, [cand("b", labels={"zone": "east"})]) == (
        "no member satisfies label security=public (1 live)"
    )


def test_a_noschedule_taint_excludes_unless_tolerated() -> None:
    tainted = hb("t", taints=(NOSCHED,))
    assert unmet(Requirements(), "t", tainted) == "untolerated taint dedicated=high-priority:NoSchedule"
    ok = Requirements(tolerations=(Toleration("dedicated", "Equal", "high-priority", "NoSchedule"),))
    assert unmet(ok, "t", tainted) is None


def test_a_prefer_noschedule_taint_only_lowers_the_score() -> None:
    hot = Taint("hot", "", "PreferNoSchedule")
    # "a" sorts first and would win a tie; its taint makes "b" the choice, unless tolerated.
    a, b = cand("a", taints=(hot,)), cand("b")
    assert unmet(Requirements(), "a", a.heartbeat) is None
    assert choose(Requirements(), [a, b], W) is b
    assert choose(Requirements(tolerations=(Toleration("hot", "Exists"),)), [a, b], W) is a
    assert choose(Requirements(), [a], W) is a


def test_anti_affinity_names_the_task_it_avoids() -> None:
    req = Requirements(avoid=("t1",))
    assert unmet(req, "a", hb("a"), {"a": "t1"}) == "anti-affinity with t1"
    assert choose(req, [cand("a"), cand("b")], W, {"a": "t1"}) is not None
    assert choose(req, [cand("a")], W, {"a": "t1"}) is None


# --- the scheduler ----------------------------------------------------------------------------------


def member(name: str, slots: int = 1, **kw: object) -> Member:
    return Member(name, hb(name, slots=slots, **kw), 0.0)


def sched() -> Scheduler:
    return Scheduler("c", 1, CoreConfig(), random.Random(0), lambda spec: None)


def run(s: Scheduler, members: list[Member], now: float) -> list[Effect]:
    for m in members:
        s.on_member(m, now)
    s.dispatch(now)
    return s.drain(now)


def assigned(effects: list[Effect]) -> dict[str, str]:
    out = {}
    for e in effects:
        if isinstance(e, Publish) and isinstance(e.body, Assign):
            for a in e.body.tasks:
                out[a.task_id] = e.topic.split("/")[1]
    return out


def cancels(effects: list[Effect]) -> list[tuple[str, str, int]]:
    return [
        (e.topic.split("/")[1], e.body.task_id, e.body.attempt)
        for e in effects
        if isinstance(e, Publish) and isinstance(e.body, CancelAttempt)
    ]


def task(task_id: str, priority: int = 2, **req: object) -> TaskSpec:
    return TaskSpec(task_id, "echo", {}, priority=priority, requirements=Requirements(**req))  # type: ignore[arg-type]


def result(task_id: str, attempt: int, kind: str = "ok", job: str = "j") -> TaskResult:
    return TaskResult(task_id, job, attempt, kind, {}, None if kind == "ok" else kind, None, 1.0, 1.1)  # type: ignore[arg-type]


def test_labels_taints_and_tolerations_steer_tasks_in_the_scheduler() -> None:
    s = sched()
    members = [
        member("east", slots=4, labels={"zone": "east"}),
        member("west", slots=4, labels={"zone": "west"}, taints=(NOSCHED,)),
    ]
    tol = (Toleration("dedicated", "Exists"),)
    job = SubmitJob(
        "j",
        (
            task("t-east", labels=(("zone", "east"),)),
            task("t-west", labels=(("zone", "west"),), tolerations=tol),
            task("t-nowhere", labels=(("zone", "west"),)),
        ),
    )
    s.on_submit(job, 0.0)
    effects = run(s, members, 0.0)
    assert assigned(effects) == {"t-east": "east", "t-west": "west"}
    # East lacks the label, west has it but its taint is not tolerated: the task waits, blocked.
    assert "t-nowhere" not in assigned(effects)
    assert (s.tasks["t-nowhere"].reason or "").startswith("no member satisfies")
    req = s.tasks["t-nowhere"].spec.requirements
    assert unmet(req, "west", members[1].heartbeat) == "untolerated taint dedicated=high-priority:NoSchedule"  # type: ignore[arg-type]


def test_anti_affinity_keeps_a_task_off_the_member_of_the_task_it_avoids() -> None:
    s = sched()
    members = [member("a", slots=4), member("b", slots=4)]
    s.on_submit(SubmitJob("j", (task("first"), task("second", avoid=("first",)))), 0.0)
    placed = assigned(run(s, members, 0.0))
    assert placed["first"] != placed["second"]
    # The avoided task's last member still counts after it finished.
    s.on_results(placed["first"], [result("first", 1)], 1.0)
    s2 = sched()
    s2.on_submit(SubmitJob("j", (task("first"), task("second", avoid=("first",)))), 0.0)
    alone = [member("a", slots=4)]
    assert assigned(run(s2, alone, 0.0)) == {"first": "a"}
    assert s2.tasks["second"].reason == "no member satisfies anti-affinity with first (1 live)"


def test_pinned_tasks_go_to_their_member_and_fall_back_when_it_is_gone() -> None:
    s = sched()
    a, b = member("a", slots=1), member("b", slots=1)
    limit = CoreConfig().queue_limit(1)
    tasks = tuple(task(f"p{i}", pin=("a",)) for i in range(limit + 1))
    s.on_submit(SubmitJob("j", tasks), 0.0)
    effects = run(s, [a, b], 0.0)
    # Every pinned task goes to a although b is idle; the one beyond a's queue waits for a.
    assert set(assigned(effects).values()) == {"a"} and len(assigned(effects)) == limit
    waiting = [t for t in s.tasks.values() if t.state == "queued"]
    assert len(waiting) == 1 and waiting[0].reason is None
    s.on_member(Member("a", None, 0.0, state="dead"), 1.0)  # a is gone: any member will do
    effects = run(s, [b], 1.0)
    assert assigned(effects) == {waiting[0].task_id: "b"}  # the lost ones follow after their backoff


def preemption_setup() -> tuple[Scheduler, list[Member]]:
    s = sched()
    members = [member("a", slots=1)]
    for m in members:
        s.on_member(m, 0.0)
    s.on_submit(SubmitJob("low", (task("slow", priority=4),)), 0.0)
    s.dispatch(0.0)
    assert assigned(s.drain(0.0)) == {"slow": "a"}
    return s, members


def test_an_urgent_task_preempts_one_lower_priority_attempt() -> None:
    s, members = preemption_setup()
    s.on_submit(SubmitJob("hi", (task("urgent", priority=1, preempt=True),)), 1.0)
    effects = run(s, members, 1.0)
    assert cancels(effects) == [("a", "slow", 1)]
    # The urgent task takes the slot; the victim is requeued at once (it waits behind it on a).
    assert assigned(effects) == {"urgent": "a", "slow": "a"}
    assert s.tasks["slow"].attempt == 2
    assert any("preempted by urgent (priority high)" in line for line in s.tasks["slow"].story)
    assert s.metrics["preemptions"] == 1
    # The cancelled attempt's late result is stale: it neither commits nor fails the task.
    s.on_results("a", [result("slow", 1, "cancelled", job="low")], 2.0)
    assert s.tasks["slow"].state == "running" and s.metrics["stale_results"] == 1
    s.validate(everything=True)


def test_preempted_attempts_do_not_spend_retries() -> None:
    s = sched()
    members = [member("a", slots=1)]
    for m in members:
        s.on_member(m, 0.0)
    spec = TaskSpec("slow", "echo", {}, priority=4, retry=RetryPolicy(max_retries=1, base=0.0, jitter=0.0))
    s.on_submit(SubmitJob("low", (spec,)), 0.0)
    s.dispatch(0.0)
    s.drain(0.0)
    s.on_submit(SubmitJob("hi", (task("urgent", priority=0, preempt=True),)), 1.0)
    run(s, members, 1.0)
    s.on_results("a", [result("urgent", 1, job="hi")], 2.0)
    run(s, members, 2.0)
    s.on_results("a", [result("slow", 2, "error", job="low")], 3.0)
    # Attempt 2 is its first counted attempt: one retry is left.
    state: str = s.tasks["slow"].state
    assert state == "queued"
    effects = run(s, members, 3.0)
    assert assigned(effects) == {"slow": "a"} and s.tasks["slow"].attempt == 3
    s.on_results("a", [result("slow", 3, "error", job="low")], 4.0)
    assert s.tasks["slow"].state == "failed"


def test_preemption_is_bounded_and_needs_strictly_lower_priority_and_permission() -> None:
    s, members = preemption_setup()
    # Same priority, or no preempt flag, or a non-preemptible victim: nothing is cancelled.
    s.on_submit(SubmitJob("same", (task("peer", priority=4, preempt=True), task("polite", priority=0))), 1.0)
    effects = run(s, members, 1.0)
    # Both queue behind the running attempt, as any task would.
    assert cancels(effects) == [] and assigned(effects) == {"peer": "a", "polite": "a"}
    s2 = sched()
    s2.on_member(members[0], 0.0)
    s2.on_submit(SubmitJob("low", (task("guarded", priority=4, preemptible=False),)), 0.0)
    s2.dispatch(0.0)
    s2.drain(0.0)
    s2.on_submit(SubmitJob("hi", (task("urgent", priority=0, preempt=True),)), 1.0)
    assert cancels(run(s2, members, 1.0)) == []


def test_the_attempt_after_a_preemption_is_not_preempted_again_and_one_victim_per_placement() -> None:
    s = sched()
    members = [member("a", slots=2)]
    s.on_member(members[0], 0.0)
    s.on_submit(SubmitJob("low", (task("l1", priority=4), task("l2", priority=4))), 0.0)
    s.dispatch(0.0)
    assert set(assigned(s.drain(0.0))) == {"l1", "l2"}
    s.on_submit(SubmitJob("hi", (task("u1", priority=1, preempt=True),)), 1.0)
    effects = run(s, members, 1.0)
    assert len(cancels(effects)) == 1  # one victim for one placement
    victim = cancels(effects)[0][1]
    other = ({"l1", "l2"} - {victim}).pop()
    # u1 finishes and the victim's next attempt starts; a second urgent task finds a full member and
    # preempts the other low task, never the attempt that followed a preemption.
    s.on_results("a", [result("u1", 1, job="hi")], 2.0)
    s.on_submit(SubmitJob("hi2", (task("u2", priority=1, preempt=True),)), 3.0)
    effects = run(s, members, 3.0)
    assert cancels(effects) == [("a", other, 1)]
    assert s.tasks[victim].state == "running" and s.tasks[victim].attempt == 2
    # A third finds only protected or already-preempted attempts and a prefetch queue: no preemption.
    s.on_submit(SubmitJob("hi3", (task("u3", priority=1, preempt=True),)), 4.0)
    assert cancels(run(s, members, 4.0)) == []
    s.validate(everything=True)
