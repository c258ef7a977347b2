"""The `echo` task: returns its payload unchanged.

It exists so that a new swarm can be checked end to end (submit, place, run, commit, reply) with a task
whose result is known in advance, and so that benchmarks measure the machinery rather than the work.
"""

from __future__ import annotations

from typing import Any

from swarm import __version__
from swarm.errors import InvalidPayload
from swarm.taskapi import TaskContext

__all__ = ["EchoHandler", "handler"]


class EchoHandler:
    """Accept any JSON object (typically `{"message": ...}`) and return it as the result."""

    name = "echo"
    version = __version__

    def validate(self, payload: dict[str, Any]) -> None:
        """Any JSON object is acceptable; anything else is not a payload at all."""
        if not isinstance(payload, dict):
            raise InvalidPayload(f"echo: payload must be a JSON object, not {type(payload).__name__}")

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Return the payload itself: the result is exactly what was sent."""
        return payload


handler = EchoHandler()
