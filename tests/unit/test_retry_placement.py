"""Pure policy functions: retry backoff and placement."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from swarm.core.config import PlacementWeights
from swarm.core.placement import Candidate, choose, unmet, unmet_by_all
from swarm.core.retry import backoff_delay, should_retry
from swarm.devices.profiles import simulated_capabilities
from swarm.messages import Heartbeat, Requirements, RetryPolicy

policies = st.builds(
    RetryPolicy,
    max_retries=st.integers(0, 10),
    backoff=st.sampled_from(["fixed", "linear", "exponential"]),
    base=st.floats(0, 10),
    cap=st.floats(0, 100),
    jitter=st.floats(0, 1),
)


@given(policies, st.integers(1, 200), st.integers(0, 2**32))
def test_backoff_is_capped_and_non_negative(policy: RetryPolicy, attempt: int, seed: int) -> None:
    delay = backoff_delay(policy, attempt, random.Random(seed))
    assert 0.0 <= delay <= policy.cap


@given(st.integers(1, 30))
def test_exponential_backoff_doubles_without_jitter(attempt: int) -> None:
    policy = RetryPolicy(backoff="exponential", base=0.1, cap=1e9, jitter=0.0)
    rng = random.Random(0)
    assert backoff_delay(policy, attempt + 1, rng) == 2 * backoff_delay(policy, attempt, rng)


def test_backoff_shapes_and_requested_delay() -> None:
    rng = random.Random(0)
    fixed = RetryPolicy(backoff="fixed", base=2.0, jitter=0.0)
    linear = RetryPolicy(backoff="linear", base=2.0, jitter=0.0)
    assert [backoff_delay(fixed, n, rng) for n in (1, 2, 3)] == [2.0, 2.0, 2.0]
    assert [backoff_delay(linear, n, rng) for n in (1, 2, 3)] == [2.0, 4.0, 6.0]
    assert backoff_delay(RetryPolicy(cap=5.0), 1, rng, requested=60.0) == 5.0


@given(policies, st.integers(1, 20))
def test_retry_counts_attempts_and_respects_non_retryable(policy: RetryPolicy, attempt: int) -> None:
    assert should_retry(policy, "error", attempt) == (attempt <= policy.max_retries)
    for kind in ("fatal", "refused", "invalid", "unknown_type", "cancelled"):
        assert not should_retry(policy, kind, attempt)


def _hb(
    cores: int = 4,
    mem: int = 4096,
    platform: str = "linux",
    gpu: bool = False,
    load: float = 0.0,
    battery: float | None = None,
    role: str = "worker",
) -> Heartbeat:
    caps = simulated_capabilities(
        "h",
        cores=cores,
        memory_mb=mem,
        disk_free_gb=10.0,
        platform=platform,
        gpu=gpu,
        battery_percent=battery,
        charging=False,
        role=role,
    )
    return Heartbeat("h", caps, 2, 0, load, mem // 2, 1)


def test_requirements_filter() -> None:
    assert unmet(Requirements(min_cores=8), "a", _hb(cores=4)) == "min_cores=8"
    assert unmet(Requirements(min_memory_gb=8), "a", _hb(mem=4096)) == "min_memory_gb=8"
    assert unmet(Requirements(platform="android"), "a", _hb()) == "platform=android"
    assert unmet(Requirements(gpu=True), "a", _hb()) == "gpu=true"
    assert unmet(Requirements(role="gpu-box"), "a", _hb()) == "role=gpu-box"
    assert unmet(Requirements(exclude=("a",)), "a", _hb()) == "exclude=a"
    assert unmet(Requirements(min_cores=2, gpu=True), "a", _hb(gpu=True)) is None


def test_unmet_by_all_names_the_reason() -> None:
    cands = [Candidate("a", _hb()), Candidate("b", _hb())]
    assert unmet_by_all(Requirements(min_cores=64), cands) == "no member satisfies min_cores=64 (2 live)"
    assert unmet_by_all(Requirements(), []) == "no live member"
    assert unmet_by_all(Requirements(), cands) is None


hbs = st.builds(
    _hb,
    cores=st.integers(1, 64),
    load=st.floats(0, 1),
    battery=st.one_of(st.none(), st.floats(0, 100)),
)


@given(st.lists(st.tuples(hbs, st.integers(0, 12)), min_size=1, max_size=8), st.integers(1, 16))
def test_choose_picks_a_qualified_candidate_with_room(
    nodes: list[tuple[Heartbeat, int]], min_cores: int
) -> None:
    cands = [Candidate(f"n{i}", hb, held=held, limit=6) for i, (hb, held) in enumerate(nodes)]
    req = Requirements(min_cores=min_cores)
    chosen = choose(req, cands, PlacementWeights())
    eligible = [c for c in cands if c.has_room and unmet(req, c.node_id, c.heartbeat) is None]
    if not eligible:
        assert chosen is None
    else:
        assert chosen in eligible
        # Deterministic: the same input gives the same choice.
        assert choose(req, list(reversed(cands)), PlacementWeights()) is chosen


def test_choose_prefers_idle_and_charged() -> None:
    busy = Candidate("a", _hb(load=0.9), held=5, limit=10)
    idle = Candidate("b", _hb(load=0.0), held=0, limit=10)
    assert choose(Requirements(), [busy, idle], PlacementWeights()) is idle
    low = Candidate("a", _hb(battery=5.0))
    full = Candidate("b", _hb(battery=100.0))
    assert choose(Requirements(), [low, full], PlacementWeights()) is full
