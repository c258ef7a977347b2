"""Quotas: admission of jobs, holding tasks at concurrent limits, exact accounting, expiry, failover."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.codec import decode, encode
from swarm.core.quota import (
    DAY,
    Admission,
    JobDemand,
    Quota,
    QuotaBook,
    ScopeKind,
)
from swarm.messages import Envelope, QuotaLedger, QuotaLine, Requirements, SubmitJob, TaskSpec


def _req(cores: int = 0, memory_gb: float = 0.0) -> Requirements:
    return Requirements(min_cores=cores, min_memory_gb=memory_gb)


def _job(*reqs: Requirements, input_gb: float = 0.0) -> JobDemand:
    return JobDemand(tuple(reqs), input_gb)


def test_the_refusal_says_which_quota_and_why() -> None:
    book = QuotaBook([Quota("cores", 8, "team", "lab")])
    refusal = book.admit_job("u-1", "lab", _job(_req(16)), now=0.0)
    assert refusal is not None and refusal.permanent
    assert str(refusal) == "quota: team 'lab' may run 8 cores at once; this task asks for 16"


def test_a_task_waits_at_the_concurrent_limit_and_starts_once_another_finishes() -> None:
    book = QuotaBook([Quota("concurrent_tasks", 2, "user", "u-1")])
    assert book.started("t1", "u-1", None, _req())
    assert book.started("t2", "u-1", None, _req())
    refusal = book.start_refusal("u-1", None, _req(), now=1.0)
    assert refusal is not None and not refusal.permanent  # held queued, not failed
    assert str(refusal) == "quota: user 'u-1' may run 2 tasks at once; 2 running"
    assert book.may_start("u-2", None, _req(), now=1.0)  # someone else is not limited
    assert book.finished("t1")
    assert book.may_start("u-1", None, _req(), now=1.0)


def test_cores_and_memory_of_running_tasks_are_summed_per_user_and_team() -> None:
    book = QuotaBook([Quota("cores", 6, "team", "lab"), Quota("memory_gb", 10, "user", "u-1")])
    book.started("a", "u-1", "lab", _req(4, 6.5))
    book.started("b", "u-2", "lab", _req(1, 1.0))
    refusal = book.start_refusal("u-2", "lab", _req(2), now=0.0)
    assert refusal is not None and not refusal.permanent
    assert str(refusal) == "quota: team 'lab' may run 6 cores at once; 5 in use and this task asks for 2"
    memory = book.start_refusal("u-1", None, _req(1, 4.0), now=0.0)
    assert memory is not None
    assert (
        str(memory)
        == "quota: user 'u-1' may use 10 GB of memory at once; 6.5 GB in use and this task asks for 4 GB"
    )
    assert book.may_start("u-1", None, _req(1, 3.5), now=0.0)  # 6.5 + 3.5 == 10 exactly
    book.validate()


def test_a_task_that_declares_no_cores_still_holds_one() -> None:
    book = QuotaBook([Quota("cores", 1, "user", "u-1")])
    book.started("a", "u-1", None, _req(0))
    assert not book.may_start("u-1", None, _req(0), now=0.0)


def test_both_user_and_team_limits_apply_and_the_stricter_is_named() -> None:
    book = QuotaBook([Quota("cores", 16, "user", "u-1"), Quota("cores", 4, "team", "lab")])
    refusal = book.start_refusal("u-1", "lab", _req(8), now=0.0)
    assert refusal is not None and refusal.quota.scope_kind == "team" and refusal.permanent
    # Without the team, only the user's limit applies.
    assert book.may_start("u-1", None, _req(8), now=0.0)
    book = QuotaBook([Quota("cores", 2, "user", "u-1"), Quota("cores", 4, "team", "lab")])
    refusal = book.start_refusal("u-1", "lab", _req(3), now=0.0)
    assert refusal is not None and refusal.quota.scope_kind == "user"


def test_admission_refuses_jobs_that_could_never_run() -> None:
    book = QuotaBook(
        [
            Quota("cores", 4, "user", "u-1"),
            Quota("memory_gb", 8, "user", "u-1"),
            Quota("concurrent_tasks", 0, "user", "u-2"),
            Quota("mr_input_gb", 50, "team", "lab"),
        ]
    )
    assert book.admit_job("u-1", None, _job(_req(2), _req(4, 8.0)), now=0.0) is None
    too_big = book.admit_job("u-1", None, _job(_req(2), _req(2, 12.0)), now=0.0)
    assert too_big is not None and too_big.quota.resource == "memory_gb" and too_big.permanent
    nothing = book.admit_job("u-2", None, _job(_req()), now=0.0)
    assert nothing is not None and str(nothing) == "quota: user 'u-2' may run no tasks"
    big_input = book.admit_job("u-3", "lab", _job(_req(), input_gb=120), now=0.0)
    assert big_input is not None
    assert (
        str(big_input)
        == "quota: team 'lab' may read 50 GB of MapReduce input per job; this job declares 120 GB"
    )
    assert book.admit_job("u-3", "lab", _job(_req(), input_gb=50), now=0.0) is None


def test_tasks_per_day_is_a_rolling_window() -> None:
    book = QuotaBook([Quota("tasks_per_day", 10, "user", "u-1")])
    assert book.admit_job("u-1", None, _job(*[_req()] * 6), now=100.0) is None
    refusal = book.admit_job("u-1", None, _job(*[_req()] * 5), now=200.0)
    assert refusal is not None and not refusal.permanent
    assert (
        str(refusal)
        == "quota: user 'u-1' may submit 10 tasks a day; 6 submitted in the last 24 h and this job has 5"
    )
    assert book.admit_job("u-1", None, _job(*[_req()] * 4), now=300.0) is None  # a refusal charges nothing
    assert book.admit_job("u-1", None, _job(_req()), now=100.0 + DAY - 1) is not None
    assert book.admit_job("u-1", None, _job(*[_req()] * 6), now=100.0 + DAY) is None  # the first job left
    whole = book.admit_job("u-1", None, _job(*[_req()] * 11), now=1e9)
    assert whole is not None and whole.permanent
    assert str(whole) == "quota: user 'u-1' may submit 10 tasks a day; this job has 11"
    book.validate()


def test_job_refusal_checks_without_charging() -> None:
    book = QuotaBook([Quota("tasks_per_day", 3, "team", "lab")])
    for _ in range(5):
        assert book.job_refusal("u-1", "lab", _job(_req(), _req()), now=0.0) is None
    assert book.admit_job("u-1", "lab", _job(_req(), _req()), now=0.0) is None
    assert book.admit_job("u-2", "lab", _job(_req(), _req()), now=1.0) is not None  # the team's count


def test_an_expired_quota_no_longer_applies() -> None:
    book = QuotaBook([Quota("cores", 2, "user", "u-1", expires_at=50.0)])
    assert not book.may_start("u-1", None, _req(4), now=49.9)
    assert book.may_start("u-1", None, _req(4), now=50.0)
    assert book.usage("user", "u-1", now=50.0)[1] == QuotaLine("cores", None, 0)


def test_set_quota_replaces_and_remove_lifts() -> None:
    book = QuotaBook([Quota("cores", 2, "user", "u-1")])
    old = book.set_quota(Quota("cores", 8, "user", "u-1"))
    assert old is not None and old.limit == 2
    assert book.may_start("u-1", None, _req(8), now=0.0)
    assert book.remove_quota("user", "u-1", "cores") is not None
    assert book.quotas() == []
    with pytest.raises(ValueError, match="two cores quotas"):
        QuotaBook([Quota("cores", 2, "user", "u-1"), Quota("cores", 3, "user", "u-1")])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"resource": "gpus"},
        {"scope_kind": "group"},
        {"scope": ""},
        {"limit": -1},
        {"limit": float("inf")},
        {"limit": 2.5},  # cores are counted whole
        {"expires_at": float("nan")},
    ],
)
def test_nonsense_quotas_are_refused(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"resource": "cores", "limit": 4, "scope_kind": "user", "scope": "u-1"}
    with pytest.raises(ValueError):
        Quota(**{**base, **kwargs})  # type: ignore[arg-type]


def test_usage_lists_every_resource_with_its_limit() -> None:
    book = QuotaBook(
        [Quota("memory_gb", 32, "team", "lab", expires_at=1e6), Quota("mr_input_gb", 100, "team", "lab")]
    )
    book.started("a", "u-1", "lab", _req(2, 0.1))
    book.started("b", "u-2", "lab", _req(1, 0.2))
    book.admit_job("u-1", "lab", _job(_req(), _req()), now=10.0)
    assert book.usage("team", "lab", now=10.0) == [
        QuotaLine("concurrent_tasks", None, 2),
        QuotaLine("cores", None, 3),
        QuotaLine("memory_gb", 32, 0.3, 1e6),
        QuotaLine("tasks_per_day", None, 2),
        QuotaLine("mr_input_gb", 100, None),
    ]
    assert book.usage("user", "u-1", now=10.0)[1].used == 2


def test_started_and_finished_are_idempotent() -> None:
    book = QuotaBook()
    assert book.started("a", "u-1", "lab", _req(2))
    assert not book.started("a", "u-1", "lab", _req(2))
    assert book.usage("user", "u-1", 0.0)[1].used == 2
    assert book.finished("a") and not book.finished("a") and not book.finished("never")
    assert book.usage("team", "lab", 0.0)[0].used == 0


def test_finishing_charges_the_team_the_task_started_under() -> None:
    book = QuotaBook()
    book.started("a", "u-1", "lab", _req(2))
    book.finished("a")  # the user moved teams meanwhile: the old team is credited, not the new one
    assert book.usage("team", "lab", 0.0)[1].used == 0
    book.validate()


def test_a_successor_takes_the_days_admissions_from_the_ledger() -> None:
    quotas = [Quota("tasks_per_day", 5, "user", "u-1")]
    old = QuotaBook(quotas)
    assert old.admit_job("u-1", "lab", _job(_req(), _req()), now=100.0) is None
    assert old.admit_job("u-1", "lab", _job(_req()), now=130.0) is None
    assert old.admit_job("u-2", None, _job(_req()), now=150.0) is None
    # Merged by user, team and minute, each dated at its minute's end.
    ledger = old.ledger(200.0)
    assert ledger == (
        Admission("u-1", "lab", 120.0, 2),
        Admission("u-1", "lab", 180.0, 1),
        Admission("u-2", "", 180.0, 1),
    )
    new = QuotaBook(quotas)
    new.restore(ledger)
    assert new.admit_job("u-1", "lab", _job(_req(), _req(), _req()), now=300.0) is not None  # 3 + 3 > 5
    day = {line.resource: line.used for line in new.usage("team", "lab", 300.0)}["tasks_per_day"]
    assert day == 3  # the team's day counts too
    assert new.admit_job("u-1", "lab", _job(_req(), _req()), now=300.0) is None
    assert new.ledger(300.0 + DAY) == ()
    new.validate()


def test_a_ledger_of_an_unnamed_submitter_crosses_the_wire() -> None:
    # A cluster without identities admits jobs for the principal "": its ledger must still be readable.
    book = QuotaBook()
    assert book.admit_job("", None, _job(_req()), now=10.0) is None
    env = Envelope(1, "c", "a", 1, "m1", QuotaLedger(book.ledger(20.0)))
    assert decode(encode(env), cluster="c").body == QuotaLedger((Admission("", "", 60.0, 1),))


def test_job_demand_of_a_submission() -> None:
    job = SubmitJob("j1", (TaskSpec("t1", "echo", {}, requirements=_req(3, 1.5)), TaskSpec("t2", "echo", {})))
    assert JobDemand.of(job) == JobDemand((_req(3, 1.5), Requirements()), 0.0)
    # A MapReduce job's input is the byte ranges its maps read.
    maps = tuple(
        TaskSpec(f"m{i}", "mapreduce.map", {"input": {"start": i * 2**30, "end": (i + 1) * 2**30}})
        for i in range(2)
    )
    assert JobDemand.of(SubmitJob("j2", maps)).input_gb == 2.0


# --- properties ----------------------------------------------------------------------------------

_SCOPES: list[tuple[ScopeKind, str]] = [
    ("user", "u-1"),
    ("user", "u-2"),
    ("user", "u-3"),
    ("team", "lab"),
    ("team", "ops"),
]
_TASKS = st.lists(
    st.tuples(
        st.sampled_from(["u-1", "u-2", "u-3"]),
        st.sampled_from([None, "lab", "ops"]),
        st.integers(0, 64),
        st.floats(0, 512, allow_nan=False).map(lambda gb: round(gb, 3)),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(_TASKS, st.randoms(use_true_random=False), st.randoms(use_true_random=False))
def test_usage_never_goes_negative_and_returns_to_zero_in_any_order(
    tasks: list[tuple[str, str | None, int, float]], start_order: random.Random, finish_order: random.Random
) -> None:
    book = QuotaBook([Quota("memory_gb", 100, "team", "lab"), Quota("cores", 10, "user", "u-1")])
    ids = [f"t{i}" for i in range(len(tasks))]
    pending = list(zip(ids, tasks, strict=True))
    start_order.shuffle(pending)
    running: list[str] = []
    # Starts and finishes interleave at random; a finish of something not running, or a second start,
    # must change nothing.
    while pending or running:
        if pending and (not running or start_order.random() < 0.6):
            task_id, (who, team, cores, gb) = pending.pop()
            assert book.started(task_id, who, team, _req(cores, gb))
            assert not book.started(task_id, who, team, _req(cores, gb))
            running.append(task_id)
        else:
            finish_order.shuffle(running)
            assert book.finished(running.pop())
            assert not book.finished("not-running")
        book.validate()
        for kind, scope in _SCOPES:
            for row in book.usage(kind, scope, now=0.0):
                assert row.used is None or row.used >= 0
    for kind, scope in _SCOPES:
        assert [row.used for row in book.usage(kind, scope, now=0.0)] == [0, 0, 0, 0, None]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3 * DAY, allow_nan=False), st.integers(1, 5)), max_size=40))
def test_the_daily_count_is_the_sum_over_the_last_day(jobs: list[tuple[float, int]]) -> None:
    book = QuotaBook()
    jobs.sort()
    for i, (at, n) in enumerate(jobs):
        assert book.admit_job("u-1", None, _job(*[_req()] * n), now=at) is None
        expected = sum(k for t, k in jobs[: i + 1] if t > at - DAY)
        assert book.usage("user", "u-1", now=at)[3].used == expected
        book.validate()
