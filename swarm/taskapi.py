"""What a task plugin implements, and what it is given when it runs.

A plugin is any object registered under the `swarm.tasks` entry-point group that has a `name`, a
`version`, a `validate(payload)` that raises `InvalidPayload` for a payload it cannot run, and a
`run(ctx, payload)` that returns a JSON-serialisable result. `run` executes inside a worker process, never
on the node's event loop; it may raise `swarm.errors.Retry` or `swarm.errors.Fatal`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["DataPlane", "TaskContext", "TaskHandler", "TaskPolicy"]


@dataclass(frozen=True, slots=True)
class TaskPolicy:
    """What the node's owner allows task code to do on this device."""

    allow_command: bool = False
    allow_file_operations: bool = False
    allowed_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DataPlane:
    """Where a node keeps bulk data (MapReduce runs) and the URL peers fetch it from."""

    directory: str = ""
    url: str = ""
    spill_threshold_mb: int = 256


@dataclass(frozen=True, slots=True)
class TaskContext:
    """Who runs this attempt, where, under which policy, and with which data plane."""

    node_id: str
    task_id: str
    attempt: int
    work_dir: str
    policy: TaskPolicy = field(default_factory=TaskPolicy)
    data: DataPlane = field(default_factory=DataPlane)


@runtime_checkable
class TaskHandler(Protocol):
    """A task type: validated on the coordinator before placement, run in a worker process."""

    name: str
    version: str

    def validate(self, payload: dict[str, Any]) -> None:
        """Raise `swarm.errors.InvalidPayload` with a clear reason if `payload` cannot be run."""

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Do the work and return a JSON-serialisable result."""
