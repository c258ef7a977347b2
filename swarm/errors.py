"""The error hierarchy.

`SwarmError` is the root. `LocalError`s are our own misuse or failure (bad config, bad spec given to the
CLI); `RemoteError`s describe something a peer sent us (a malformed message, an unknown task type).
Task code raises `Retry` to ask for another attempt and `Fatal` to fail without retrying; any other
exception fails the attempt and is retried according to the task's policy.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Fatal",
    "InvalidPayload",
    "InvalidSpec",
    "InvalidTransition",
    "LocalError",
    "ProtocolError",
    "RemoteError",
    "Retry",
    "SwarmError",
    "TaskRefused",
    "UnknownTaskType",
]


class SwarmError(Exception):
    """Root of every error swarm raises on purpose."""


class LocalError(SwarmError):
    """Something on this side is wrong: configuration, arguments, a spec given to the CLI."""


class RemoteError(SwarmError):
    """Something a peer sent is wrong; the node logs it, counts it and goes on."""


class ConfigError(LocalError):
    """The node's configuration is invalid."""


class InvalidSpec(LocalError):
    """A task, batch, chain or workflow specification is invalid."""


class InvalidTransition(SwarmError):
    """A lifecycle moved between two states the transition table does not allow."""

    def __init__(self, what: str, old: str, new: str, story: list[str] | None = None) -> None:
        self.story = story or []
        detail = "".join(f"\n  {line}" for line in self.story)
        super().__init__(f"{what}: illegal transition {old} -> {new}{detail}")


class ProtocolError(RemoteError):
    """A message could not be decoded or validated (bad JSON, version, type, field, size)."""


class UnknownTaskType(RemoteError):
    """No handler is registered for the task type."""


class InvalidPayload(RemoteError):
    """A task payload does not match what its handler accepts."""


class TaskRefused(RemoteError):
    """The node's policy forbids this task (e.g. `command` without `allow_command`)."""


class Retry(Exception):
    """Raised by task code to ask for another attempt, optionally after `delay` seconds."""

    def __init__(self, reason: str = "retry requested", delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class Fatal(Exception):
    """Raised by task code to fail the task at once, without further attempts."""
