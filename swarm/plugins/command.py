"""The `command` task: run one program, without a shell, and return its exit code and output.

It is off unless the node's owner sets `allow_command`, and even then it runs only the programs the owner
lists in `allowed_commands` (absolute paths; the config loader resolves bare names such as "python3" on
the node's PATH once, when it loads): none listed means none at all. A task names a program by one of
those paths or by its file name, never by a search of some PATH, so the program that runs is always one
the owner chose. No shell is involved, so arguments are never re-interpreted.

The program starts in the attempt's private work directory (or a `cwd` inside it or inside
`allowed_paths`) with a clean environment: `PATH=/usr/bin:/bin`, `HOME` the work directory,
`LANG=C.UTF-8`, and nothing else unless the payload's `env` sets it; the node's own variables, which may
hold credentials, never reach it. Output is read by two threads that keep only the first `MAX_OUTPUT`
bytes of each stream and discard the rest, so a chatty program cannot exhaust the worker's memory.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from swarm import __version__
from swarm.errors import ConfigError, InvalidPayload, TaskRefused
from swarm.plugins.pathpolicy import require_inside
from swarm.taskapi import TaskContext

__all__ = [
    "BASE_ENV",
    "MAX_OUTPUT",
    "CommandHandler",
    "ProgramOutput",
    "allowed_executable",
    "handler",
    "resolve_commands",
    "run_program",
]

MAX_OUTPUT = 64 * 1024
#: The whole environment a program starts with, before the payload's own `env`.
BASE_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_FIELDS = frozenset({"argv", "cwd", "timeout", "env"})


class _Capture:
    """Drain one pipe on a thread, keeping the first `limit` bytes."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.data = bytearray()
        self.truncated = False
        self._stream, self._limit = stream, limit
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        with self._stream:
            while chunk := self._stream.read(65536):
                room = self._limit - len(self.data)
                self.data += chunk[:room]
                self.truncated |= len(chunk) > room

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def resolve_commands(names: Iterable[str]) -> tuple[str, ...]:
    """The owner's `allowed_commands` as absolute paths: bare names are looked up on this PATH now.

    Resolving once, at load, means a task can never make the node search a PATH it influences. A
    relative path with a directory part is refused as ambiguous; a name or path that is not an
    executable file is a `ConfigError` naming it, so a typo is found when the node starts.
    """
    resolved: list[str] = []
    for name in names:
        if os.path.isabs(name):
            path: str | None = name if os.path.isfile(name) and os.access(name, os.X_OK) else None
        elif os.sep in name or (os.altsep and os.altsep in name):
            raise ConfigError(f"[tasks] allowed_commands: {name!r} must be an absolute path or a bare name")
        else:
            path = shutil.which(name)
        if path is None:
            raise ConfigError(f"[tasks] allowed_commands: {name!r} is not an executable file on this node")
        resolved.append(os.path.abspath(path))
    return tuple(resolved)


def allowed_executable(program: str, allowed: tuple[str, ...], cwd: str) -> str:
    """The allowed program `program` names: one of `allowed` by its path or by its file name; refused
    (`TaskRefused`) otherwise."""
    if not allowed:
        raise TaskRefused(
            "command: this node allows no programs; its owner lists them in the config's [tasks] "
            'allowed_commands, e.g. allowed_commands = ["/usr/bin/ls", "python3"]'
        )
    if os.sep in program or (os.altsep and os.altsep in program):
        real = os.path.realpath(os.path.join(cwd, program))
        for path in allowed:
            if os.path.realpath(path) == real:
                return real
    else:
        for path in allowed:
            if os.path.basename(path) == program:
                return path
    raise TaskRefused(f"command: executable {program!r} is not in this node's allowed_commands")


def _check_env(env: Any) -> None:
    if env is None:
        return
    if not isinstance(env, dict):
        raise InvalidPayload("command: 'env' must be an object of names to strings")
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or not isinstance(value, str) or "\0" in value:
            raise InvalidPayload(f"command: bad environment entry {key!r}")


def _check_timeout(timeout: Any) -> None:
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise InvalidPayload("command: 'timeout' must be a positive number of seconds")


class CommandHandler:
    """`{"argv": [str, ...], "cwd": str?, "timeout": float?, "env": {str: str}?}` -> exit code and output."""

    name = "command"
    version = __version__

    def validate(self, payload: dict[str, Any]) -> None:
        """Check the shape only; whether this node allows it is decided where it runs (`run`)."""
        if not isinstance(payload, dict):
            raise InvalidPayload("command: payload must be a JSON object")
        unknown = set(payload) - _FIELDS
        if unknown:
            raise InvalidPayload(f"command: unexpected fields {sorted(unknown)}")
        argv = payload.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise InvalidPayload("command: 'argv' must be a non-empty list of strings")
        if not argv[0] or any("\0" in a for a in argv):
            raise InvalidPayload("command: arguments must not be empty programs or contain NUL")
        cwd = payload.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not cwd or "\0" in cwd):
            raise InvalidPayload("command: 'cwd' must be a non-empty string")
        _check_timeout(payload.get("timeout"))
        _check_env(payload.get("env"))

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Enforce the policy, run the program and report its exit code and bounded output."""
        policy = ctx.policy
        if not policy.allow_command:
            raise TaskRefused("command: this node does not allow command tasks (allow_command is off)")
        argv: list[str] = payload["argv"]
        cwd = os.path.join(ctx.work_dir, payload.get("cwd") or ".")
        executable = allowed_executable(argv[0], policy.allowed_commands, cwd)
        cwd = require_inside(cwd, (ctx.work_dir, *policy.allowed_paths), "command: cwd")
        env = {**BASE_ENV, "HOME": ctx.work_dir, **(payload.get("env") or {})}
        out = run_program(argv, executable, cwd, env, timeout=payload.get("timeout"))
        return {
            "returncode": out.returncode,
            "stdout": out.stdout,
            "stderr": out.stderr,
            "stdout_truncated": out.stdout_truncated,
            "stderr_truncated": out.stderr_truncated,
        }


@dataclass(frozen=True, slots=True)
class ProgramOutput:
    """How a program ended and the first `MAX_OUTPUT` bytes of each of its streams."""

    returncode: int
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool


def run_program(
    argv: list[str],
    executable: str,
    cwd: str,
    env: dict[str, str],
    *,
    stdin: bytes = b"",
    timeout: float | None = None,
) -> ProgramOutput:
    """Run a program the policy allowed (no shell), feeding it `stdin`, keeping bounded output."""
    proc = subprocess.Popen(
        argv,
        executable=executable,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Capture(proc.stdout, MAX_OUTPUT), _Capture(proc.stderr, MAX_OUTPUT)
    if stdin:
        assert proc.stdin is not None
        # A thread, so that a program that never reads its input cannot block us before the timeout.
        threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
    try:
        returncode = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise TimeoutError(f"{argv[0]} did not finish within {timeout} s") from None
    for capture in (out, err):
        capture.thread.join(1.0)  # a grandchild may still hold the pipe open; do not wait for it
    return ProgramOutput(returncode, out.text(), err.text(), out.truncated, err.truncated)


def _feed(pipe: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(OSError), pipe:
        pipe.write(data)


handler = CommandHandler()
