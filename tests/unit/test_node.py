"""The node machine's own rules, driven by hand: no broker, no clock but the one passed in."""

from __future__ import annotations

import random

import pytest

from swarm.core.config import CoreConfig
from swarm.core.events import (
    ClearRetained,
    Connected,
    Effect,
    MessageReceived,
    Persist,
    PersistFailed,
    PolicyChanged,
    Publish,
    RetainedCleared,
    RunTask,
    TaskFinished,
    Tick,
)
from swarm.core.node import DeviceStatus, NodeMachine
from swarm.core.quota import Quota
from swarm.core.succession import succession_rank
from swarm.devices.profiles import simulated_capabilities
from swarm.messages import (
    Admission,
    Assign,
    Assignment,
    Body,
    Claim,
    Commit,
    CoordinatorAnnounce,
    Envelope,
    Heartbeat,
    JobState,
    NodeGone,
    QuotaLedger,
    SubmitJob,
    Sync,
    TaskResult,
    TaskSpec,
    TaskUpdate,
)

CFG = CoreConfig()


def _deliver(node: NodeMachine, topic: str, sender: str, epoch: int, body: Body, now: float) -> list[Effect]:
    return node.handle(MessageReceived(topic, Envelope(1, "c", sender, epoch, f"m{now}", body)), now)


def _coordinator(name: str = "a", heard: tuple[tuple[str, str, int, Body], ...] = ()) -> NodeMachine:
    """A node that claimed the next epoch alone, after hearing `heard` (topic, sender, epoch, body)."""
    caps = simulated_capabilities(name)
    status = DeviceStatus(caps, 0.1, 2048)
    node = NodeMachine(name, name, CFG, random.Random(0), lambda spec: None, status, 0, 0.0)
    for topic, sender, epoch, body in heard:
        _deliver(node, topic, sender, epoch, body, 0.0)
    now, claims = 0.0, []
    while not claims:
        now += CFG.tick_interval
        claims = [
            e.body for e in node.handle(Tick(), now) if isinstance(e, Publish) and isinstance(e.body, Claim)
        ]
    _deliver(node, "election", name, claims[0].epoch, claims[0], now)
    assert node.scheduler is not None
    return node


def _sync_of(effects: list[Effect]) -> Sync:
    (sync,) = [e.body for e in effects if isinstance(e, Publish) and isinstance(e.body, Sync)]
    return sync


def _restated(effects: list[Effect]) -> set[str]:
    return {e.topic for e in effects if isinstance(e, Publish) and e.topic in ("election", "coord")}


def test_a_reconnected_coordinator_restates_its_claim_only_after_the_retained_records() -> None:
    node = _coordinator()
    epoch = node.election.epoch
    connected = node.handle(Connected(), 10.0)
    assert _restated(connected) == set()
    effects = _deliver(node, "node/a/in", "a", epoch, _sync_of(connected), 10.1)
    assert _restated(effects) == {"election", "coord"}


def test_a_coordinator_deposed_while_away_does_not_put_its_old_claim_back() -> None:
    node = _coordinator()
    epoch = node.election.epoch
    sync = _sync_of(node.handle(Connected(), 10.0))
    # The retained records come first: a successor has claimed and announced the next epoch.
    _deliver(node, "election", "b", epoch + 1, Claim(epoch + 1), 10.05)
    _deliver(node, "coord", "b", epoch + 1, CoordinatorAnnounce(epoch + 1, "b"), 10.06)
    assert node.scheduler is None
    assert _restated(_deliver(node, "node/a/in", "a", epoch, sync, 10.1)) == set()


def _worker_of(coordinator: str, epoch: int) -> NodeMachine:
    caps = simulated_capabilities("w")
    node = NodeMachine(
        "w", "w", CFG, random.Random(0), lambda spec: None, DeviceStatus(caps, 0.1, 2048), 0, 0.0
    )
    _deliver(node, "coord", coordinator, epoch, CoordinatorAnnounce(epoch, coordinator), 0.1)
    return node


def test_only_the_coordinator_of_the_epoch_assigns_and_only_to_the_inbox() -> None:
    node = _worker_of("c", 3)
    work = Assign((Assignment("j.t0", "j", 1, "echo", {}),))
    for topic, sender, epoch in (("node/w/in", "rogue", 3), ("node/w/in", "c", 4), ("node/x/in", "c", 3)):
        _deliver(node, topic, sender, epoch, work, 0.2)
        assert not node.worker.held
    assert node.metrics["refused_messages"] == 3
    effects = _deliver(node, "node/w/in", "c", 3, work, 0.3)
    assert any(isinstance(e, RunTask) for e in effects)


def test_a_claim_far_ahead_and_an_announcement_for_another_are_refused() -> None:
    node = _worker_of("c", 3)
    _deliver(node, "election", "rogue", 2**53 - 1, Claim(2**53 - 1), 0.2)
    _deliver(node, "coord", "rogue", 4, CoordinatorAnnounce(4, "c"), 0.3)
    _deliver(node, "node/c/hb", "rogue", 3, NodeGone("forged"), 0.4)
    assert node.election.epoch == 3 and node.election.coordinator == "c"
    assert node.metrics["refused_messages"] == 3
    _deliver(node, "election", "d", 4, Claim(4), 0.5)  # a claim within reach is taken
    assert node.election.epoch == 4 and node.election.coordinator == "d"


def test_records_of_older_epochs_are_dropped_without_an_info_line() -> None:
    """A restart reads every finished job's retained state, each of an older epoch: dropping them is
    routine, counted in the node's metrics and told at debug level, not one info line each."""
    node = _coordinator()
    epoch = node.election.epoch
    _deliver(node, "election", "b", epoch + 5, Claim(epoch + 5), 1.0)
    node.take_story()
    for n in range(10):
        _deliver(node, f"job/j{n}/state", "a", epoch, JobState(f"j{n}", 1), 1.1 + n / 100)
    assert node.metrics["fenced_messages"] == 10
    entries, _ = node.take_story()
    dropped = [e for e in entries if "stale epoch" in e.message]
    assert len(dropped) == 10 and {e.level for e in dropped} == {"debug"}


def test_a_finished_jobs_spec_goes_with_its_records_and_its_state_last() -> None:
    """A job's spec is cleared when its records expire, before its state record; the id is forgotten
    only once the state record is gone."""
    node = _coordinator()
    epoch = node.election.epoch
    job = SubmitJob("j", (TaskSpec("j.a", "echo", {}),))
    _deliver(node, "job/j/spec", "u", 0, job, 1.0)
    _deliver(node, "job/j/commits/1.0", "a", epoch, Commit("j", (TaskUpdate("j.a", "done", 1),)), 1.1)
    _deliver(node, "job/j/state", "a", epoch, JobState("j", 1, finished=True), 1.2)
    assert "j" not in node.replica.specs
    expiry = 1.2 + CFG.finished_job_retention
    cleared = [e.topic for e in node.handle(Tick(), expiry) if isinstance(e, ClearRetained)]
    assert cleared == ["job/j/commits/1.0", "job/j/spec", "job/j/state"]
    assert not [e for e in node.handle(Tick(), expiry + 1.0) if isinstance(e, ClearRetained)]
    assert "j" in node.replica.finished  # a late retained spec is still known as finished
    node.handle(RetainedCleared("job/j/state"), expiry + 1.1)
    assert "j" not in node.replica.finished


def test_a_deposed_coordinators_close_leaves_the_spec_to_its_successor() -> None:
    """A coordinator that has not heard of its successor may close a job on its own; its final state is
    fenced, and nothing it sends takes the spec from a standby's replica."""
    standby = _worker_of("c", 2)
    job = SubmitJob("j", (TaskSpec("j.a", "echo", {}),))
    _deliver(standby, "coord", "c", 2, CoordinatorAnnounce(2, "c", ("w",)), 0.1)
    _deliver(standby, "job/j/spec", "u", 0, job, 0.2)
    _deliver(standby, "election", "d", 3, Claim(3), 0.3)  # d takes over; c does not know it yet
    _deliver(standby, "job/j/state", "c", 2, JobState("j", 1, finished=True), 0.4)
    assert [j.job_id for j, _, _ in standby.replica.active()] == ["j"]


def test_a_record_off_its_own_topic_is_refused() -> None:
    """A commit on the job's state topic, or a final state on a commit topic, would be cleared and
    expired as the wrong record: both are refused, like a record on another job's topic."""
    node = _coordinator()
    epoch = node.election.epoch
    _deliver(node, "job/j/spec", "u", 0, SubmitJob("j", (TaskSpec("j.a", "echo", {}),)), 1.0)
    _deliver(node, "job/j/state", "a", epoch, Commit("j", (TaskUpdate("j.a", "done", 1),)), 1.1)
    _deliver(node, "job/j/commits/1.0", "a", epoch, JobState("j", 1, finished=True), 1.2)
    _deliver(node, "job/k/state", "a", epoch, JobState("j", 1, finished=True), 1.3)
    assert node.metrics["refused_messages"] == 3
    assert "j" in node.replica.specs and "j" not in node.replica.finished


def test_a_failed_placement_sends_the_steps_effects_with_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """When placing work raises, what the step already made leaves with it (counted as a handler
    error), and nothing of it is left over for the next step."""
    node = _coordinator()
    scheduler = node.scheduler
    assert scheduler is not None
    marker = Publish("job/j/events", JobState("j", 1), epoch=scheduler.epoch)

    def failing_dispatch(now: float) -> None:
        scheduler._effects.append(marker)
        raise RuntimeError("a bug in placement")

    monkeypatch.setattr(scheduler, "dispatch", failing_dispatch)
    assert marker in node.handle(Tick(), 5.0)
    assert node.metrics["handler_errors"] == 1
    monkeypatch.undo()
    assert marker not in node.handle(Tick(), 5.1)


def test_a_coordinator_runs_its_own_work_without_the_broker() -> None:
    """The coordinator's own worker gets its assignments, and returns its results, in memory: no message
    on its inbox or on coord/in, and the job still closes, counted finished once its commits are
    durable (their records came back from the broker), not before."""
    node = _coordinator()
    epoch = node.election.epoch
    now = CFG.takeover_grace + 1.0
    caps = node.status.caps
    _deliver(node, "node/a/hb", "a", epoch, Heartbeat("a", caps, 1, 0, 0.1, 2048, 1), now)
    effects = _deliver(node, "job/j/spec", "u", 0, SubmitJob("j", (TaskSpec("j.a", "echo", {}),)), now)
    runs = [e.assignment for e in effects if isinstance(e, RunTask)]
    assert [a.task_id for a in runs] == ["j.a"]
    result = TaskResult("j.a", "j", runs[0].attempt, "ok", {}, None, None, now, now + 0.1)
    effects += node.handle(TaskFinished(result), now + 0.1)
    published = [e for e in effects if isinstance(e, Publish)]
    assert not [e for e in published if e.topic in ("node/a/in", "coord/in")], published
    commits = [e for e in published if isinstance(e.body, Commit)]
    assert commits and not any(isinstance(e.body, JobState) for e in published)
    assert "j" not in node.replica.finished
    effects = [e for c in commits for e in _deliver(node, c.topic, "a", epoch, c.body, now + 0.2)]
    assert any(isinstance(e, Publish) and isinstance(e.body, JobState) and e.body.finished for e in effects)
    assert "j" in node.replica.finished


def test_a_worker_whose_disk_refuses_the_epoch_keeps_working() -> None:
    node = _worker_of("c", 3)
    effects = _deliver(node, "coord", "c", 4, CoordinatorAnnounce(4, "c"), 0.2)
    assert Persist(4) in effects
    node.handle(PersistFailed(4, "No space left on device"), 0.3)
    assert node.metrics["persist_failures"] == 1 and node.election.epoch == 4
    work = Assign((Assignment("j.t0", "j", 1, "echo", {}),))
    assert any(isinstance(e, RunTask) for e in _deliver(node, "node/w/in", "c", 4, work, 0.4))
    # The epoch in memory still fences the deposed coordinator.
    _deliver(node, "node/w/in", "c", 3, Assign((Assignment("j.t1", "j", 1, "echo", {}),)), 0.5)
    assert set(node.worker.held) == {"j.t0"}


def test_a_successor_counts_the_day_from_its_predecessors_quota_ledger() -> None:
    policy = PolicyChanged((Quota("tasks_per_day", 3, "user", "u-1"),))

    def job(job_id: str, tasks: int) -> SubmitJob:
        specs = tuple(TaskSpec(f"{job_id}.t{i}", "echo", {}) for i in range(tasks))
        return SubmitJob(job_id, specs, submitted_by="u-1", role="submitter")

    old = _coordinator()
    old.handle(policy, 1.0)
    _deliver(old, "job/j1/spec", "u-1.c", 0, job("j1", 2), 1.1)
    (ledger,) = [e for e in old.handle(Tick(), 2.0) if isinstance(e, Publish) and e.topic == "quota/ledger"]
    assert ledger.retain and ledger.body == QuotaLedger((Admission("u-1", "", 60.0, 2),))
    # Nothing new admitted: no second ledger.
    assert not [e for e in old.handle(Tick(), 4.0) if isinstance(e, Publish) and e.topic == "quota/ledger"]

    new = _coordinator("b", heard=(("quota/ledger", "a", ledger.epoch, ledger.body),))
    new.handle(policy, 10.0)
    _deliver(new, "job/j2/spec", "u-1.c", 0, job("j2", 2), 10.1)  # 2 + 2 > 3 a day
    _deliver(new, "job/j3/spec", "u-1.c", 0, job("j3", 1), 10.2)
    assert new.scheduler is not None and set(new.scheduler.jobs) == {"j3"}
    # A ledger off its topic, or from another member in the coordinator's epoch, is refused.
    _deliver(new, "job/x/state", "a", ledger.epoch, ledger.body, 10.3)
    _deliver(new, "quota/ledger", "a", new.election.epoch, ledger.body, 10.4)
    assert new.metrics["refused_messages"] == 2


def test_a_lone_fresh_node_is_first_in_line_and_a_coordinator_goes_before_its_members() -> None:
    """The rank orders who starts a broker when none is found (`BrokerLocator`): a node that knows nobody
    must not wait for a successor ahead of it."""

    def fresh(name: str) -> NodeMachine:
        status = DeviceStatus(simulated_capabilities(name), 0.1, 2048)
        return NodeMachine(name, name, CFG, random.Random(0), lambda spec: None, status, 0, 0.0)

    assert fresh("b").succession_rank() == 0
    assert _coordinator("a").succession_rank() == 0
    follower = fresh("c")
    follower.election.coordinator = "a"
    assert follower.succession_rank() == 1
    # A coordinator that left (its goodbye heard) holds no place: the survivor need not wait for it.
    assert succession_rank(follower.election, [], "c", lambda node_id: "dead") == 0
    assert succession_rank(follower.election, [], "c", lambda node_id: "alive") == 1
