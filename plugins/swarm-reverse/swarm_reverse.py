"""An example swarm task plugin: `{"text": "abc"}` -> `{"reversed": "cba"}`.

It is deliberately complete rather than clever: a name and version, a `validate` that rejects bad payloads
before the task is placed, and a `run` that does the work in a worker process of whichever node gets it.
"""

from __future__ import annotations

from typing import Any

from swarm.errors import InvalidPayload
from swarm.taskapi import TaskContext

__all__ = ["MAX_TEXT", "ReverseHandler", "handler"]

MAX_TEXT = 1_000_000


class ReverseHandler:
    """Reverse the characters of `payload["text"]`."""

    name = "reverse"  # must equal the entry point's name in pyproject.toml
    version = "1.0.0"

    def validate(self, payload: dict[str, Any]) -> None:
        """Runs on the coordinator before placement: cheap checks, no side effects."""
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str):
            raise InvalidPayload("reverse: payload must be {'text': <string>}")
        if len(text) > MAX_TEXT:
            raise InvalidPayload(f"reverse: 'text' is longer than {MAX_TEXT} characters")

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Runs in a worker process; the result must be JSON-serialisable."""
        return {"reversed": payload["text"][::-1]}


handler = ReverseHandler()
