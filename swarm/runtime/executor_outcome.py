"""How an attempt ended: the `Outcome` the executor returns for every attempt, whatever happened.

An outcome comes either from the worker's reply, which says how the task ended (`decode`), or from what
the executor saw instead: a timeout, a cancel, a worker that died (`failed`, `exit_description`). A reply
the executor cannot make sense of is the executor's error, not the task's crash.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import Any, Literal, get_args

import orjson

__all__ = ["Outcome", "OutcomeKind", "decode", "exit_description", "failed"]

OutcomeKind = Literal[
    "ok", "error", "retry", "fatal", "timeout", "crash", "refused", "invalid", "unknown_type"
]
_KINDS: frozenset[str] = frozenset(get_args(OutcomeKind))


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended; `started_at`/`finished_at` are `time.time()` in the worker when it got there."""

    ok: bool
    result: Any = None
    error: str | None = None
    kind: OutcomeKind = "ok"
    retry_after: float | None = None
    started_at: float = 0.0
    finished_at: float = 0.0


def failed(kind: OutcomeKind, error: str, started_at: float) -> Outcome:
    """An attempt that failed with `kind` and `error`, ending now."""
    return Outcome(ok=False, error=error, kind=kind, started_at=started_at, finished_at=time.time())


def decode(data: bytes) -> Outcome:
    """Turn a worker's reply into an `Outcome`; a malformed reply is an executor error, not a crash."""
    msg = orjson.loads(data)
    kind = msg.get("kind")
    if kind not in _KINDS:
        return failed("error", f"worker sent an unknown outcome kind {kind!r}", time.time())
    return Outcome(
        ok=kind == "ok",
        result=msg.get("result"),
        error=msg.get("error"),
        kind=kind,
        retry_after=msg.get("retry_after"),
        started_at=float(msg.get("started_at", 0.0)),
        finished_at=float(msg.get("finished_at", 0.0)),
    )


def exit_description(code: int | None) -> str:
    """What ended a worker process, from its exit code (None: unknown)."""
    if code is None:
        return "worker process died"
    if code < 0:
        try:
            return f"worker process killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker process killed by signal {-code}"
    return f"worker process exited with code {code}"
