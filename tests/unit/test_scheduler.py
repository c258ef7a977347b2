"""The scheduler as a pure machine: effects asserted directly, no network."""

from __future__ import annotations

import dataclasses
import heapq
import random

import pytest

from swarm.core.config import CoreConfig
from swarm.core.events import ClearRetained, Effect, Publish
from swarm.core.membership import Member
from swarm.core.preemption import PREEMPT_LOOKAHEAD, most_urgent
from swarm.core.replica import Replica
from swarm.core.scheduler import Scheduler
from swarm.devices.profiles import simulated_capabilities
from swarm.messages import (
    Amend,
    Assign,
    AttemptsSpent,
    CancelAttempt,
    Commit,
    Heartbeat,
    JobAccepted,
    JobRejected,
    JobState,
    Requirements,
    RetryPolicy,
    SubmitJob,
    TaskRef,
    TaskResult,
    TaskSpec,
    WorkerReport,
)


def member(node_id: str, cores: int = 4, slots: int = 2) -> Member:
    caps = simulated_capabilities(node_id, cores=cores, disk_free_gb=10.0)
    return Member(node_id, Heartbeat(node_id, caps, slots, 0, 0.0, 2048, 1), 0.0)


def place(s: Scheduler, members: list[Member], now: float) -> None:
    """Tell the scheduler who is alive, as their heartbeats do, then let it place ready tasks."""
    for m in members:
        s.on_member(m, now)
    s.dispatch(now)


def sched(validator: object = None, **config: object) -> Scheduler:
    cfg = CoreConfig(**config)  # type: ignore[arg-type]
    return Scheduler("c", 1, cfg, random.Random(0), validator or (lambda spec: None))  # type: ignore[arg-type]


def of_type(effects: list[Effect], kind: type) -> list[object]:
    return [e.body for e in effects if isinstance(e, Publish) and isinstance(e.body, kind)]


def assigned(effects: list[Effect]) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for e in effects:
        if isinstance(e, Publish) and isinstance(e.body, Assign) and e.body.tasks:
            out[e.topic.split("/")[1]] = [(a.task_id, a.attempt) for a in e.body.tasks]
    return out


def commits(effects: list[Effect]) -> dict[str, str]:
    return {u.task_id: u.state for c in of_type(effects, Commit) for u in c.updates}  # type: ignore[attr-defined]


def echo(s: Scheduler, effects: list[Effect]) -> None:
    """What the broker does: every retained record the scheduler published comes back to it."""
    for e in effects:
        if isinstance(e, Publish) and e.retain:
            s.on_echo(e.topic)


def ok(task_id: str, attempt: int = 1, job: str = "j") -> TaskResult:
    return TaskResult(task_id, job, attempt, "ok", {"r": task_id}, None, None, 1.0, 1.1)


def test_accept_place_commit_and_finish() -> None:
    s = sched()
    s.on_submit(SubmitJob("j", (TaskSpec("a", "echo", {}), TaskSpec("b", "echo", {}))), 0.0)
    place(s, [member("w1")], 0.0)
    effects = s.drain(0.0)
    assert of_type(effects, JobAccepted) == [JobAccepted("j", 2)]
    assert assigned(effects) == {"w1": [("a", 1), ("b", 1)]}
    s.on_results("w1", [ok("a"), ok("b")], 0.5)
    effects = s.drain(0.5)
    assert commits(effects) == {"a": "done", "b": "done"}
    # The final record waits until the commits are durable: back from the broker.
    assert not of_type(effects, JobState) and "j" in s.jobs
    echo(s, effects)
    effects = s.drain(0.6)
    final = of_type(effects, JobState)
    assert len(final) == 1 and final[0].finished  # type: ignore[attr-defined]
    # The spec goes when the records expire: an empty message has no epoch to fence it by.
    assert ClearRetained("job/j/spec") not in effects
    assert not s.jobs and not s.tasks


def test_a_job_stays_open_until_its_commits_come_back_from_the_broker() -> None:
    # Commits lost on the way to the broker must not be followed by the final record: members drop a
    # finished job, and a successor would adopt nothing of it (the simulator's `partition-heal` 10).
    s = sched()
    s.on_submit(SubmitJob("j", (TaskSpec("a", "echo", {}),)), 0.0)
    place(s, [member("w1")], 0.0)
    s.drain(0.0)
    s.on_results("w1", [ok("a")], 0.5)
    lost = s.drain(0.5)
    assert commits(lost) == {"a": "done"}
    for now in (1.0, 2.0, 5.0):
        s.tick(now)
        assert not of_type(s.drain(now), JobState) and "j" in s.jobs
    assert s.on_amend(Amend("j", (), (TaskSpec("b", "echo", {}),), "", "admin"), 5.0) == "no running job 'j'"
    s.on_submit(SubmitJob("j", (TaskSpec("a", "echo", {}),)), 5.0)  # a resend is not a new job
    assert not assigned(s.drain(5.0))
    echo(s, lost)
    final = of_type(s.drain(5.5), JobState)
    assert len(final) == 1 and not s.jobs


def test_each_echo_closes_the_job_it_completes_while_others_wait() -> None:
    s = sched()
    jobs = [f"j{i}" for i in range(50)]
    for job in jobs:
        s.on_submit(SubmitJob(job, (TaskSpec(f"{job}.a", "echo", {}),)), 0.0)
    place(s, [member("w1", slots=50)], 0.0)
    s.drain(0.0)
    s.on_results("w1", [ok(f"{job}.a", job=job) for job in jobs], 0.5)
    unechoed = [e for e in s.drain(0.5) if isinstance(e, Publish) and isinstance(e.body, Commit)]
    assert {e.body.job_id for e in unechoed} == set(jobs)  # type: ignore[attr-defined]
    for e in unechoed[:3]:
        s.on_echo(e.topic)
    closed = [state.job_id for state in of_type(s.drain(0.6), JobState)]  # type: ignore[attr-defined]
    assert closed == sorted(e.body.job_id for e in unechoed[:3])  # type: ignore[attr-defined]
    assert len(s.jobs) == 47
    echo(s, unechoed[3:])
    assert len(of_type(s.drain(0.7), JobState)) == 47 and not s.jobs


def test_resubmission_is_acknowledged_not_rerun() -> None:
    s = sched()
    job = SubmitJob("j", (TaskSpec("a", "echo", {}),))
    s.on_submit(job, 0.0)
    place(s, [member("w1")], 0.0)
    s.drain(0.0)
    s.on_submit(job, 1.0)
    place(s, [member("w1")], 1.0)
    effects = s.drain(1.0)
    assert of_type(effects, JobAccepted) == [JobAccepted("j", 1)]
    assert assigned(effects) == {}


@pytest.mark.parametrize(
    ("job", "needle"),
    [
        (SubmitJob("j", ()), "has no tasks"),
        (
            SubmitJob(
                "j", (TaskSpec("a", "echo", {}, after=("b",)), TaskSpec("b", "echo", {}, after=("a",)))
            ),
            "cycle",
        ),
        (SubmitJob("j", (TaskSpec("a", "echo", {}, after=("zz",)),)), "unknown task 'zz'"),
        (SubmitJob("j", (TaskSpec("a", "echo", {}), TaskSpec("a", "echo", {}))), "duplicate task id"),
        (SubmitJob("j", (TaskSpec("a", "nope", {}),)), "unknown task type"),
        (SubmitJob("j", (TaskSpec("a", "echo", {}, requirements=Requirements(min_cores=-1)),)), "negative"),
    ],
)
def test_invalid_jobs_are_rejected_with_a_reason(job: SubmitJob, needle: str) -> None:
    s = sched(validator=lambda spec: "unknown task type 'nope'" if spec.type == "nope" else None)
    s.on_submit(job, 0.0)
    effects = s.drain(0.0)
    rejected = of_type(effects, JobRejected)
    assert len(rejected) == 1 and needle in rejected[0].reason  # type: ignore[attr-defined]
    assert ClearRetained("job/j/spec") in effects


def test_failed_predecessor_fails_dependents_and_finishes_the_job_once() -> None:
    s = sched()
    s.on_submit(SubmitJob("j", (TaskSpec("a", "x", {}), TaskSpec("b", "x", {}, after=("a",)))), 0.0)
    place(s, [member("w1")], 0.0)
    s.drain(0.0)
    s.on_results("w1", [TaskResult("a", "j", 1, "fatal", error="boom")], 0.1)
    effects = s.drain(0.1)
    assert commits(effects) == {"a": "failed", "b": "failed"}
    echo(s, effects)
    assert len(of_type(s.drain(0.2), JobState)) == 1
    assert not of_type(s.drain(0.3), JobState)


def test_chain_pipes_the_previous_result() -> None:
    s = sched()
    s.on_submit(
        SubmitJob("j", (TaskSpec("a", "x", {}), TaskSpec("b", "x", {"k": 1}, after=("a",), pipe=True))), 0.0
    )
    place(s, [member("w1")], 0.0)
    s.drain(0.0)
    s.on_results("w1", [ok("a")], 0.1)
    place(s, [member("w1")], 0.1)
    effects = s.drain(0.1)
    (batch,) = of_type(effects, Assign)
    assert batch.tasks[0].payload == {"k": 1, "previous": {"r": "a"}}  # type: ignore[attr-defined]


def test_an_assignment_names_whose_job_it_is() -> None:
    """The worker side runs it in a worker process of that principal's alone (`Slot.worker`)."""
    s = sched()
    s.on_submit(SubmitJob("j", (TaskSpec("a", "echo", {}),), submitted_by="u-1", role="submitter"), 0.0)
    s.on_submit(SubmitJob("k", (TaskSpec("b", "echo", {}),), submitted_by="u-2", role="submitter"), 0.0)
    place(s, [member("w1")], 0.0)
    (batch,) = of_type(s.drain(0.0), Assign)
    assert {a.task_id: a.owner for a in batch.tasks} == {"a": "u-1", "b": "u-2"}  # type: ignore[attr-defined]


def test_retry_backs_off_then_succeeds_and_stale_results_are_dropped() -> None:
    s = sched()
    policy = RetryPolicy(max_retries=2, backoff="fixed", base=1.0, jitter=0.0)
    s.on_submit(SubmitJob("j", (TaskSpec("a", "x", {}, retry=policy),)), 0.0)
    place(s, [member("w1")], 0.0)
    s.drain(0.0)
    s.on_results("w1", [TaskResult("a", "j", 1, "error", error="flaky")], 0.1)
    s.tick(0.5)
    place(s, [member("w1")], 0.5)
    assert assigned(s.drain(0.5)) == {}
    s.tick(1.2)
    place(s, [member("w1")], 1.2)
    assert assigned(s.drain(1.2)) == {"w1": [("a", 2)]}
    s.on_results("w1", [ok("a", attempt=1)], 1.3)  # a late result of the first attempt
    assert commits(s.drain(1.3)) == {}
    assert s.metrics["stale_results"] == 1
    s.on_results("w1", [ok("a", attempt=2)], 1.4)
    assert commits(s.drain(1.4)) == {"a": "done"}


def test_a_successor_goes_on_counting_attempts_and_retries() -> None:
    """Attempts and retries spent travel in the job log: a new coordinator numbers the next attempt after
    them and grants only the retries left (it used to start every unfinished task at attempt 1)."""
    policy = RetryPolicy(max_retries=2, backoff="fixed", base=0.0, jitter=0.0)
    job = SubmitJob("j", (TaskSpec("a", "x", {}, retry=policy), TaskSpec("b", "x", {})))
    first = sched()
    first.on_submit(job, 0.0)
    replica = Replica()
    replica.on_spec(job)
    for attempt in (1, 2):
        place(first, [member("w1")], attempt)
        first.drain(attempt)
        first.on_results("w1", [TaskResult("a", "j", attempt, "error", error="flaky")], attempt + 0.1)
        for record in of_type(first.drain(attempt + 0.5), Commit):
            assert isinstance(record, Commit)
            replica.on_commits("j", record.updates, record.spent, f"job/j/commits/1.{attempt}", 1)
    assert replica.spent["j"]["a"] == AttemptsSpent("a", 2, 0)
    [(spec, committed, spent)] = replica.active()
    assert "b" not in spent, "a task that never failed spent nothing worth a record"
    successor = Scheduler("c2", 2, CoreConfig(), random.Random(0), lambda spec: None)
    successor.adopt(spec, committed, 10.0, spent)
    place(successor, [member("w1")], 10.0)
    assert sorted(assigned(successor.drain(10.0))["w1"]) == [("a", 3), ("b", 1)]
    successor.on_results("w1", [TaskResult("a", "j", 3, "error", error="flaky")], 10.1)
    assert commits(successor.drain(10.1)) == {"a": "failed"}, "its last retry was already spent"


def test_preempted_attempts_are_carried_without_spending_retries() -> None:
    job = SubmitJob("j", (TaskSpec("a", "x", {}, retry=RetryPolicy(max_retries=0)),))
    replica = Replica()
    replica.on_commits("j", (), (AttemptsSpent("a", 2, 2),), "job/j/commits/1.0", 1)
    replica.on_commits("j", (), (AttemptsSpent("a", 1, 1),), "job/j/commits/1.1", 1)  # older, overtaken
    replica.on_spec(job)
    [(spec, committed, spent)] = replica.active()
    successor = Scheduler("c2", 2, CoreConfig(), random.Random(0), lambda spec: None)
    successor.adopt(spec, committed, 0.0, spent)
    place(successor, [member("w1")], 0.0)
    assert assigned(successor.drain(0.0)) == {"w1": [("a", 3)]}
    # Attempt 3 is the first that counts (two were preempted): with no retries it fails for good.
    successor.on_results("w1", [TaskResult("a", "j", 3, "error", error="flaky")], 0.1)
    assert commits(successor.drain(0.1)) == {"a": "failed"}


def test_dead_worker_tasks_move_elsewhere() -> None:
    s = sched()
    s.on_submit(SubmitJob("j", (TaskSpec("a", "x", {}, retry=RetryPolicy(jitter=0.0, base=0.0)),)), 0.0)
    place(s, [member("w1")], 0.0)
    s.drain(0.0)
    dead = member("w1")
    dead.state = "dead"
    s.on_member(dead, 5.0)
    s.tick(5.0)
    place(s, [member("w2")], 5.0)
    assert assigned(s.drain(5.0)) == {"w2": [("a", 2)]}


def test_unschedulable_task_waits_with_reason_then_fails() -> None:
    s = sched(pending_timeout=10.0)
    s.on_submit(SubmitJob("j", (TaskSpec("a", "x", {}, requirements=Requirements(min_cores=64)),)), 0.0)
    place(s, [member("w1")], 0.0)
    s.drain(0.0)
    assert s.tasks["a"].reason == "no member satisfies min_cores=64 (1 live)"
    s.tick(5.0)
    place(s, [member("w1")], 5.0)
    assert commits(s.drain(5.0)) == {}
    s.tick(10.5)
    effects = s.drain(10.5)
    assert commits(effects) == {"a": "failed"}


def test_timeout_backstop_cancels_and_retries() -> None:
    s = sched()
    s.on_submit(
        SubmitJob("j", (TaskSpec("a", "x", {}, timeout=1.0, retry=RetryPolicy(base=0.0, jitter=0.0)),)), 0.0
    )
    place(s, [member("w1")], 0.0)
    s.drain(0.0)
    s.tick(1.0 + CoreConfig().failure_timeout + 0.1)
    effects = s.drain(5.0)
    assert of_type(effects, CancelAttempt) == [CancelAttempt("a", 1)]
    place(s, [member("w1")], 5.0)
    assert assigned(s.drain(5.0)) == {"w1": [("a", 2)]}


def test_cancel_commits_cancelled_and_stops_the_attempt() -> None:
    s = sched()
    s.on_submit(SubmitJob("j", (TaskSpec("a", "x", {}), TaskSpec("b", "x", {}, after=("a",)))), 0.0)
    place(s, [member("w1")], 0.0)
    s.drain(0.0)
    assert s.on_cancel("j", "", "member", 1.0) is None
    effects = s.drain(1.0)
    assert commits(effects) == {"a": "cancelled", "b": "cancelled"}
    assert of_type(effects, CancelAttempt) == [CancelAttempt("a", 1)]
    assert s.on_cancel("nothing", "", "member", 1.0) == "no task or job 'nothing'"


def test_takeover_adopts_running_attempts_and_reported_results() -> None:
    s = Scheduler("c2", 2, CoreConfig(), random.Random(0), lambda spec: None, dispatch_after=1.0)
    job = SubmitJob("j", (TaskSpec("a", "x", {}), TaskSpec("b", "x", {}), TaskSpec("c", "x", {})))
    s.adopt(job, {}, 0.0)
    place(s, [member("w1")], 0.5)
    assert assigned(s.drain(0.5)) == {}  # still in the takeover grace
    s.on_worker_report("w1", WorkerReport(2, (TaskRef("a", "j", 3),), (ok("b", attempt=2),)), 0.6)
    effects = s.drain(0.6)
    assert commits(effects) == {"b": "done"}
    place(s, [member("w1")], 1.1)
    assert assigned(s.drain(1.1)) == {"w1": [("c", 1)]}
    s.on_results("w1", [ok("a", attempt=3)], 1.2)
    assert commits(s.drain(1.2)) == {"a": "done"}


def test_priority_orders_placement() -> None:
    s = sched(prefetch=0)
    tasks = tuple(TaskSpec(f"t{p}", "x", {}, priority=p) for p in (4, 2, 0, 3, 1))
    s.on_submit(SubmitJob("j", tasks), 0.0)
    place(s, [member("w1", slots=1)], 0.0)  # room for 1 + 4 prefetch = 5, all placed in priority order
    assert [t for t, _ in assigned(s.drain(0.0))["w1"]] == ["t0", "t1", "t2", "t3", "t4"]


def test_republish_restores_retained_records_on_a_new_broker() -> None:
    s = sched()
    job = SubmitJob("j", (TaskSpec("a", "x", {}), TaskSpec("b", "x", {})))
    s.on_submit(job, 0.0)
    place(s, [member("w1")], 0.0)
    s.drain(0.0)
    s.on_results("w1", [ok("a")], 0.1)
    s.tick(2.0)
    s.drain(2.0)
    s.on_echo("job/j/commits/1.0")
    s.republish()
    s.tick(4.0)
    effects = s.drain(4.0)
    topics = {e.topic for e in effects if isinstance(e, Publish) and e.retain}
    assert topics == {"job/j/spec", "job/j/commits/1.1"}


def test_a_record_that_never_comes_back_is_published_again_and_acks_wait_for_it() -> None:
    s = sched()
    s.on_submit(SubmitJob("j", (TaskSpec("a", "x", {}), TaskSpec("b", "x", {}))), 0.0)
    place(s, [member("w1")], 0.0)
    s.drain(0.0)
    s.on_results("w1", [ok("a")], 0.1)
    assert commits(s.drain(0.1)) == {"a": "done"}
    s.tick(0.2)
    later = s.drain(0.2)
    assert commits(later) == {}
    # Acknowledged once its commit is published, alone since no assignment goes to w1 meanwhile.
    assert [a.acked for a in of_type(later, Assign)] == [(TaskRef("a", "j", 1),)]
    s.tick(0.1 + 4 * s._config.heartbeat_interval)
    again = s.drain(0.1 + 4 * s._config.heartbeat_interval)
    assert [e.topic for e in again if isinstance(e, Publish) and isinstance(e.body, Commit)] == [
        "job/j/commits/1.0"
    ]
    s.on_echo("job/j/commits/1.0")
    s.tick(10.0)
    assert commits(s.drain(10.0)) == {}


def test_a_refusing_device_is_avoided_and_a_task_nobody_allows_waits_with_the_reason() -> None:
    s = sched(pending_timeout=5.0)
    s.on_submit(SubmitJob("j", (TaskSpec("a", "command", {}),), role="operator"), 0.0)
    place(s, [member("w1")], 0.0)
    s.drain(0.0)
    s.on_results("w1", [TaskResult("a", "j", 1, "refused", error="command is not allowed here")], 0.1)
    place(s, [member("w1"), member("w2")], 0.1)
    assert assigned(s.drain(0.1)) == {"w2": [("a", 2)]}
    s.on_results("w2", [TaskResult("a", "j", 2, "refused", error="command is not allowed here")], 0.2)
    place(s, [member("w1"), member("w2")], 0.2)
    assert assigned(s.drain(0.2)) == {}
    assert s.tasks["a"].reason == "no member satisfies exclude=w1,w2 (2 live)"
    s.tick(5.5)
    assert commits(s.drain(5.5)) == {"a": "failed"}


def test_a_success_of_an_attempt_the_new_coordinator_did_not_know_ran_is_taken() -> None:
    """A new coordinator's own worker finishes an earlier epoch's attempt before its report comes back."""
    s = Scheduler("c2", 2, CoreConfig(), random.Random(0), lambda spec: None, dispatch_after=1.0)
    s.adopt(SubmitJob("j", (TaskSpec("a", "x", {}),)), {}, 0.0)
    s.on_results("c2", [ok("a", attempt=3)], 0.5)
    assert commits(s.drain(0.5)) == {"a": "done"}
    # A late failure of an attempt the coordinator never saw is not adopted: the task may still run.
    s.adopt(SubmitJob("k", (TaskSpec("b", "x", {}),)), {}, 0.6)
    s.on_results("c2", [TaskResult("b", "k", 1, "error", error="boom")], 0.7)
    assert s.tasks["b"].state == "queued"


def test_only_the_submitter_or_an_operator_may_cancel_a_job() -> None:
    s = sched()
    s.on_submit(SubmitJob("j", (TaskSpec("a", "x", {}),), submitted_by="u-1", role="submitter"), 0.0)
    refusal = s.on_cancel("j", "u-2", "submitter", 1.0)
    assert refusal is not None and "may not cancel job j of u-1" in refusal
    assert s.tasks["a"].state != "cancelled"
    assert s.on_cancel("a", "u-3", "operator", 1.0) is None
    assert s.tasks["a"].state == "cancelled"


@pytest.mark.parametrize(
    "spec",
    [TaskSpec("a", "command", {"argv": ["true"]}), TaskSpec("a", "step.python", {"params": {}})],
    ids=["command", "workflow-step"],
)
def test_a_task_that_runs_its_own_code_needs_the_run_code_permission(spec: TaskSpec) -> None:
    s = sched()
    s.on_submit(SubmitJob("j", (spec,), submitted_by="u-1", role="submitter"), 0.0)
    effects = s.drain(0.0)
    rejected = [e.body for e in effects if isinstance(e, Publish) and isinstance(e.body, JobRejected)]
    assert rejected and "lacks the run_code permission" in rejected[0].reason
    assert "j" not in s.jobs


def test_a_result_counts_only_from_the_node_the_attempt_went_to() -> None:
    s = sched()
    s.on_submit(SubmitJob("j", (TaskSpec("a", "x", {}),)), 0.0)
    place(s, [member("w1"), member("w2")], 0.0)
    s.drain(0.0)
    rec = s.tasks["a"]
    other = "w2" if rec.node == "w1" else "w1"
    s.on_results(other, [TaskResult("a", "j", rec.attempt, "ok", result="forged")], 1.0)
    assert rec.state == "running"
    assert s.metrics["foreign_results"] == 1


def test_a_report_written_before_an_assignment_arrived_does_not_lose_it() -> None:
    """Under overload a worker's report can predate an Assign by many seconds: the attempt is lost only
    once the worker has seen the Assign that carried it (or very long ago)."""
    s = sched()
    s.on_submit(SubmitJob("j", (TaskSpec("a", "x", {}),)), 0.0)
    place(s, [member("w1")], 0.0)
    first = of_type(s.drain(0.0), Assign)
    assert [(x.seq, [t.task_id for t in x.tasks]) for x in first] == [(1, ["a"])]  # type: ignore[attr-defined]
    s.on_submit(SubmitJob("k", (TaskSpec("b", "x", {}),)), 1.0)
    place(s, [member("w1")], 1.0)
    second = of_type(s.drain(1.0), Assign)
    assert [(x.seq, [t.task_id for t in x.tasks]) for x in second] == [(2, ["b"])]  # type: ignore[attr-defined]
    # Written when only the first Assign had arrived, read ten seconds later: b is not lost.
    s.on_worker_report("w1", WorkerReport(1, (TaskRef("a", "j", 1),), (), assigns_seen=1), 11.0)
    assert s.tasks["b"].state == "running" and s.tasks["b"].attempt == 1
    # Once the worker has seen the second Assign and does not hold b, b was lost.
    s.on_worker_report("w1", WorkerReport(1, (TaskRef("a", "j", 1),), (), assigns_seen=2), 12.0)
    assert s.tasks["b"].state == "queued" and s.tasks["b"].reason.startswith("attempt 1 lost")


def test_attempts_lost_with_a_member_that_comes_back_spend_no_retries() -> None:
    """A member declared dead that heartbeats on (same process, its sequence goes on) was only late:
    the attempts lost with it are refunded. One that restarted (its sequence starts again) is not."""
    one_retry = RetryPolicy(max_retries=1, jitter=0.0, base=0.0)
    for later_seq, refunded in ((9, True), (1, False)):
        s = sched()
        s.on_submit(SubmitJob("j", (TaskSpec("a", "x", {}, retry=one_retry),)), 0.0)
        w1 = member("w1")
        w1.heartbeat = dataclasses.replace(w1.heartbeat, seq=5)  # type: ignore[arg-type]
        place(s, [w1], 0.0)
        s.drain(0.0)
        w1.state = "dead"
        s.on_member(w1, 5.0)  # attempt 1 lost: the one retry spent
        back = member("w1")
        back.heartbeat = dataclasses.replace(back.heartbeat, seq=later_seq)  # type: ignore[arg-type]
        place(s, [back], 6.0)
        assert assigned(s.drain(6.0)) == {"w1": [("a", 2)]}
        s.on_results("w1", [TaskResult("a", "j", 2, "error", error="flaky")], 7.0)
        expected = {} if refunded else {"a": "failed"}
        assert commits(s.drain(7.0)) == expected, later_seq


def test_the_k_smallest_of_a_heap_sit_in_its_first_places() -> None:
    """The preemption look at the most urgent ready tasks reads only a heap's first 2**k - 1 places."""
    rng = random.Random(7)
    for size in (0, 1, 5, 300, 5000):
        heap: list[tuple[int, int, str]] = []
        for seq in range(size):
            heapq.heappush(heap, (rng.randrange(-3, 3), seq, f"t{seq}"))
        assert most_urgent(heap) == heapq.nsmallest(PREEMPT_LOOKAHEAD, heap)


def test_the_coordinators_own_worker_is_not_measured_as_a_link() -> None:
    """Its first attempt starts a worker process and takes long: counted as link time, it would lose the
    coordinator every tie, and one-at-a-time tasks would all take a hop through the broker."""

    def local(s: Scheduler, now: float) -> list[tuple[str, int]]:
        s.drain(now)
        own = s.take_local()  # the coordinator's own worker gets its assignments in memory
        return [(a.task_id, a.attempt) for a in own.tasks] if own is not None else []

    s = sched()
    members = [member("c"), member("w1")]  # "c" is the scheduler's own node; equal in all else
    s.on_submit(SubmitJob("j", (TaskSpec("a", "echo", {}),)), 0.0)
    place(s, members, 0.0)
    assert local(s, 0.0) == [("a", 1)]
    s.on_results("c", [ok("a")], 3.0)  # 2.9 s outside the task, as a cold first attempt can be
    s.drain(3.0)
    s.on_submit(SubmitJob("k", (TaskSpec("b", "echo", {}),)), 3.0)
    place(s, members, 3.0)
    assert local(s, 3.0) == [("b", 1)]
    own, other = s._roster.member("c"), s._roster.member("w1")
    assert own is not None and own.latency_ms == 0.0
    # Another member's attempts are measured: the same slow attempt there counts against it.
    s.on_results("c", [ok("b", job="k")], 3.5)
    s.on_submit(SubmitJob("l", (TaskSpec("x", "echo", {}, requirements=Requirements(pin=("w1",))),)), 3.5)
    place(s, members, 3.5)
    assert assigned(s.drain(3.5)) == {"w1": [("x", 1)]}
    s.on_results("w1", [ok("x", job="l")], 6.5)
    s.drain(6.5)
    assert other is not None and other.latency_ms > 1000 and own.latency_ms == 0.0
