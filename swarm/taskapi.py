"""What a task plugin implements, and what it is given when it runs.

A plugin is any object registered under the `swarm.tasks` entry-point group that has a `name`, a
`version`, a `validate(payload)` that raises `InvalidPayload` for a payload it cannot run, and a
`run(ctx, payload)` that returns a JSON-serialisable result. `run` executes inside a worker process, never
on the node's event loop; it may raise `swarm.errors.Retry` or `swarm.errors.Fatal`. A handler whose
tasks always talk to other machines sets a true `network` attribute: where the node sandboxes task code,
its tasks get a sandbox with network, as a task that requires `network=true` does.

Every attempt runs in a private work directory (`ctx.work_dir`, also `$HOME` and `$TMPDIR`) that is
removed when the attempt ends, under the node's time and memory limits (`TaskPolicy.default_timeout_s`
when the task names no timeout; `DEFAULT_MEMORY_LIMIT_MB` unless the node's config says otherwise).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_MEMORY_LIMIT_MB",
    "DEFAULT_TIMEOUT_S",
    "DataPlane",
    "TaskContext",
    "TaskHandler",
    "TaskPolicy",
]

#: Seconds an attempt may run when its task names no timeout.
DEFAULT_TIMEOUT_S = 300.0
#: Address space (MiB) a task may add to its idle worker process.
DEFAULT_MEMORY_LIMIT_MB = 1024


@dataclass(frozen=True, slots=True)
class TaskPolicy:
    """What the node's owner allows task code to do on this device.

    `allowed_commands` are absolute paths of the programs `command` tasks may start (the config loader
    resolves bare names); none means none. `default_timeout_s` bounds an attempt whose task names no
    timeout (None: unbounded). `run_as` is the user task code runs as when the node runs as root
    (None: `nobody`); a node that is not root cannot change users and ignores it.
    """

    allow_command: bool = False
    allow_file_operations: bool = False
    allowed_paths: tuple[str, ...] = ()
    allowed_commands: tuple[str, ...] = ()
    default_timeout_s: float | None = DEFAULT_TIMEOUT_S
    run_as: str | None = None

    def __post_init__(self) -> None:
        """Reject what would make the policy mean something other than what it says."""
        relative = [c for c in self.allowed_commands if not os.path.isabs(c)]
        if relative:
            raise ValueError(f"allowed_commands must be absolute paths (resolve names first): {relative}")
        if self.default_timeout_s is not None and not self.default_timeout_s > 0:
            raise ValueError(f"default_timeout_s must be positive, got {self.default_timeout_s}")
        if self.run_as is not None and not self.run_as:
            raise ValueError("run_as must name a user")


@dataclass(frozen=True, slots=True)
class DataPlane:
    """Where a node keeps bulk data (MapReduce runs) and the URL peers fetch it from."""

    directory: str = ""
    url: str = ""
    spill_threshold_mb: int = 256


@dataclass(frozen=True, slots=True)
class TaskContext:
    """Who runs this attempt, where, under which policy, and with which data plane.

    `work_dir` is private to this attempt and removed when it ends: keep outputs elsewhere.
    """

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
    # Optional, not part of the protocol check: `network: bool` (see the module docstring).

    def validate(self, payload: dict[str, Any]) -> None:
        """Raise `swarm.errors.InvalidPayload` with a clear reason if `payload` cannot be run."""

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Do the work and return a JSON-serialisable result."""
