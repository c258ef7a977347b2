"""When a failed attempt is tried again, and after how long: pure functions of the policy."""

from __future__ import annotations

from typing import Protocol

from swarm.messages import RetryPolicy

__all__ = ["NON_RETRYABLE", "Rng", "backoff_delay", "should_retry"]

#: Outcomes that another attempt cannot fix: the task or its payload is wrong, or the owner forbids it.
NON_RETRYABLE: frozenset[str] = frozenset({"fatal", "refused", "invalid", "unknown_type", "cancelled"})


class Rng(Protocol):
    """The part of `random.Random` the core uses; a seeded instance is injected."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...


def should_retry(policy: RetryPolicy, kind: str, attempt: int) -> bool:
    """Whether attempt number `attempt` (1-based) that ended with `kind` earns another attempt."""
    return kind not in NON_RETRYABLE and attempt <= policy.max_retries


def backoff_delay(policy: RetryPolicy, attempt: int, rng: Rng, requested: float | None = None) -> float:
    """Seconds to wait before attempt `attempt + 1`.

    fixed: base; linear: base * attempt; exponential: base * multiplier**(attempt-1); then capped, then
    spread by +-jitter (a fraction) so that many tasks failing together do not retry in lockstep. A delay
    the task asked for (`Retry(delay=...)`) replaces the computed one but is still capped.
    """
    if requested is not None:
        return min(max(requested, 0.0), policy.cap)
    n = max(attempt, 1)
    if policy.backoff == "fixed":
        delay = policy.base
    elif policy.backoff == "linear":
        delay = policy.base * n
    else:
        delay = policy.base * policy.multiplier ** min(n - 1, 62)
    delay = min(delay, policy.cap)
    spread = delay * policy.jitter
    return max(0.0, min(policy.cap, delay + (2 * rng.random() - 1) * spread))
