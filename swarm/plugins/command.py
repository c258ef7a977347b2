"""The `command` task: run one program, without a shell, and return its exit code and output.

It is off unless the node's owner sets `allow_command`: a command can do anything the node's user can.
With `allowed_paths` set, both the resolved executable and the working directory must lie inside them, so
an owner can say "only the scripts in ~/swarm-bin". No shell is involved, so arguments are never
re-interpreted. Output is read by two threads that keep only the first `MAX_OUTPUT` bytes of each stream
and discard the rest, so a chatty program cannot exhaust the worker's memory.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import threading
from typing import IO, Any

from swarm import __version__
from swarm.errors import InvalidPayload, TaskRefused
from swarm.plugins.pathpolicy import require_inside
from swarm.taskapi import TaskContext

__all__ = ["MAX_OUTPUT", "CommandHandler", "handler"]

MAX_OUTPUT = 64 * 1024


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


def _resolve_executable(program: str, cwd: str) -> str:
    """Find the program like a shell would (PATH for bare names, `cwd` for relative paths)."""
    found: str | None
    if os.sep in program or (os.altsep and os.altsep in program):
        candidate = os.path.join(cwd, program)
        found = candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None
    else:
        found = shutil.which(program)
    if found is None:
        raise FileNotFoundError(f"command: executable {program!r} not found on this node")
    return os.path.realpath(found)


class CommandHandler:
    """`{"argv": [str, ...], "cwd": str?, "timeout": float?}` -> `{returncode, stdout, stderr, ...}`."""

    name = "command"
    version = __version__

    def validate(self, payload: dict[str, Any]) -> None:
        """Check the shape only; whether this node allows it is decided where it runs (`run`)."""
        if not isinstance(payload, dict):
            raise InvalidPayload("command: payload must be a JSON object")
        unknown = set(payload) - {"argv", "cwd", "timeout"}
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
        timeout = payload.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise InvalidPayload("command: 'timeout' must be a positive number of seconds")

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Enforce the policy, run the program and report its exit code and bounded output."""
        policy = ctx.policy
        if not policy.allow_command:
            raise TaskRefused("command: this node does not allow command tasks (allow_command is off)")
        argv: list[str] = payload["argv"]
        cwd: str = payload.get("cwd") or ctx.work_dir
        executable = _resolve_executable(argv[0], cwd)
        if policy.allowed_paths:
            require_inside(executable, policy.allowed_paths, "command: executable")
            cwd = require_inside(cwd, policy.allowed_paths, "command: cwd")
        proc = subprocess.Popen(
            argv,
            executable=executable,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        out, err = _Capture(proc.stdout, MAX_OUTPUT), _Capture(proc.stderr, MAX_OUTPUT)
        timeout = payload.get("timeout")
        try:
            returncode = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"command: {argv[0]} did not finish within {timeout} s") from None
        for capture in (out, err):
            capture.thread.join(1.0)  # a grandchild may still hold the pipe open; do not wait for it
        return {
            "returncode": returncode,
            "stdout": out.text(),
            "stderr": err.text(),
            "stdout_truncated": out.truncated,
            "stderr_truncated": err.truncated,
        }


handler = CommandHandler()
