"""The `sleep` task: waits for `seconds`, then reports how long it slept.

It stands in for slow work in tests, demos and scheduling benchmarks (timeouts, cancellation, slot limits)
without burning CPU.
"""

from __future__ import annotations

import math
import time
from typing import Any

from swarm import __version__
from swarm.errors import InvalidPayload
from swarm.taskapi import TaskContext

__all__ = ["SleepHandler", "handler"]


class SleepHandler:
    """`{"seconds": float >= 0}` -> `{"slept": seconds}`."""

    name = "sleep"
    version = __version__

    def validate(self, payload: dict[str, Any]) -> None:
        """Reject a missing, non-numeric, negative or non-finite duration before the task is placed."""
        if not isinstance(payload, dict):
            raise InvalidPayload("sleep: payload must be a JSON object")
        seconds = payload.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise InvalidPayload("sleep: 'seconds' must be a number")
        if not math.isfinite(seconds) or seconds < 0:
            raise InvalidPayload(f"sleep: 'seconds' must be finite and >= 0, got {seconds!r}")

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Sleep in the worker process; the executor's timeout and cancel kill it if needed."""
        seconds = float(payload["seconds"])
        time.sleep(seconds)
        return {"slept": seconds}


handler = SleepHandler()
