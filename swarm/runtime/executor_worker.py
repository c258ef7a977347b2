"""The child side of `swarm.runtime.executor`: one long-lived worker process running one task at a time.

Theory of operation
-------------------
The parent starts the process with a `WorkerConfig` and one end of a pipe. The worker puts itself in its
own process group (so the parent can kill it together with anything a task started), loads its own
`Registry`, caps its address space, and answers `{"ready": true}`, or `{"ready": false, "error": ...}` if
it cannot serve, which the parent turns into a start-up error. Then it loops: receive one request (orjson
bytes), run it, send one reply (orjson bytes), until the pipe reaches end of file, which means the parent is
gone or shutting down. A task still running then is killed at once (`_die_with_node`), not left to finish
unseen.

Each reply carries a `kind` that classifies the attempt the way the scheduler needs it (see `_KINDS`), the
result or the error text with its traceback, and `started_at`/`finished_at` measured here with
`time.time()`. Nothing a task raises leaves `run_one`; only a process-level failure (a segfault,
`os._exit`, the kernel's OOM killer) ends the loop, and the parent reports that attempt as a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import orjson

from swarm.errors import Fatal, InvalidPayload, Retry, TaskRefused, UnknownTaskType
from swarm.registry import Registry
from swarm.taskapi import DataPlane, TaskContext, TaskPolicy

__all__ = ["MAX_ERROR_CHARS", "WorkerConfig", "load_registry", "main", "run_one"]

MAX_ERROR_CHARS = 16_000

log = logging.getLogger(__name__)

_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (Retry, "retry"),
    (Fatal, "fatal"),
    (TaskRefused, "refused"),
    (InvalidPayload, "invalid"),
    (UnknownTaskType, "unknown_type"),
)
_WITH_TRACEBACK = frozenset({"error", "fatal"})


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything a worker needs, passed once at start; plain data so every start method can pickle it."""

    node_id: str
    work_dir: str
    policy: TaskPolicy = field(default_factory=TaskPolicy)
    data: DataPlane = field(default_factory=DataPlane)
    memory_limit_mb: int | None = None
    registry_factory: str | None = None
    max_result_bytes: int = 16 * 1024 * 1024
    strict_plugins: bool = True


def load_registry(factory: str | None, strict: bool = True) -> Any:
    """Build the worker's registry: the installed plugins, or `module:callable` (used by tests)."""
    if factory is None:
        return Registry.from_entry_points(strict=strict)
    module_name, _, attr_path = factory.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    return obj()


def _address_space_bytes() -> int:
    """Current virtual size of this process, the baseline the memory limit is added to."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().vms)
    except Exception:  # no psutil or no permission: count from zero
        return 0


def limit_memory(limit_mb: int | None) -> None:
    """Cap the address space at the idle worker's size plus `limit_mb`, where the platform allows.

    The cap is headroom above the idle worker rather than an absolute size because the idle size varies
    widely (a many-core machine's threaded libraries reserve far more virtual memory than a phone's),
    and the setting is meant to bound what a task may add. The hard limit is lowered too, so task code
    cannot raise it back.
    """
    if limit_mb is None:
        return
    try:
        import resource
    except ImportError:
        log.warning("memory_limit_mb is not supported on this platform; tasks run unbounded")
        return
    limit = _address_space_bytes() + limit_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError) as exc:
        log.warning("could not set the memory limit (%s); tasks run unbounded", exc)


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker if its parent dies mid-task (best effort)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 == PR_SET_PDEATHSIG


def _die_with_node(conn: Connection) -> None:
    """On Linux, kill this worker and its task's programs as soon as the node's end of the pipe closes.

    `_die_with_parent` alone does not cover a node that is SIGKILLed: with the forkserver start method a
    worker's parent is the fork server, and the fork server stays up as long as any worker lives (every
    worker holds its alive pipe), so a running task would go on to its end, unseen by any coordinator.
    The node's end closes only when the node dies or stops this worker, and either way the worker is done.
    A thread waits for the hang-up; POLLHUP and POLLERR are reported without being asked for.
    """
    if not sys.platform.startswith("linux"):
        return
    poller = select.poll()
    poller.register(conn.fileno(), 0)

    def watch() -> None:
        while True:
            try:
                events = poller.poll()
            except OSError:
                return
            if any(mask & (select.POLLHUP | select.POLLERR) for _, mask in events):
                break
            if any(mask & select.POLLNVAL for _, mask in events):
                return  # our own end was closed: the process is on its way out anyway
        if os.getpgrp() == os.getpid():  # our own group (see `main`): never the node's or its caller's
            with contextlib.suppress(OSError):
                os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, name="swarm-worker.node-watch", daemon=True).start()


def _classify(exc: BaseException) -> str:
    for cls, kind in _KINDS:
        if isinstance(exc, cls):
            return kind
    return "error"


def _error_text(exc: BaseException, kind: str) -> str:
    """One line naming the exception, plus the traceback where it helps someone debug task code."""
    text = f"{type(exc).__name__}: {exc}"
    if kind in _WITH_TRACEBACK:
        text += "\n" + "".join(traceback.format_exception(exc))
    if len(text) > MAX_ERROR_CHARS:
        half = MAX_ERROR_CHARS // 2
        text = text[:half] + "\n...[truncated]...\n" + text[-half:]
    return text


def _reply(kind: str, started: float, **fields: Any) -> bytes:
    return orjson.dumps({"kind": kind, "started_at": started, "finished_at": time.time(), **fields})


def run_one(registry: Any, config: WorkerConfig, request: dict[str, Any]) -> bytes:
    """Run one request and return the encoded reply; never raises for anything the task does."""
    task_id, attempt = str(request["task_id"]), int(request["attempt"])
    os.environ["SWARM_NODE_ID"] = config.node_id
    os.environ["SWARM_TASK_ID"] = task_id
    os.environ["SWARM_ATTEMPT"] = str(attempt)
    os.environ["SWARM_WORK_DIR"] = config.work_dir
    with contextlib.suppress(OSError):
        os.chdir(config.work_dir)  # undo a previous task's chdir
    ctx = TaskContext(config.node_id, task_id, attempt, config.work_dir, config.policy, config.data)
    started = time.time()
    try:
        handler = registry.get(request["type"])
        handler.validate(request["payload"])
        result = handler.run(ctx, request["payload"])
    except (Exception, SystemExit) as exc:  # SystemExit too: sys.exit() in task code fails the attempt
        kind = _classify(exc)
        retry_after = exc.delay if isinstance(exc, Retry) else None
        return _reply(kind, started, error=_error_text(exc, kind), retry_after=retry_after)
    finished = time.time()
    try:
        data = orjson.dumps(
            {"kind": "ok", "result": result, "started_at": started, "finished_at": finished},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        return _reply("error", started, error=f"result is not JSON-serialisable: {exc}")
    if len(data) > config.max_result_bytes:
        return _reply("error", started, error=f"result is {len(data)} bytes, over {config.max_result_bytes}")
    return data


def _serve(conn: Connection, handle: Callable[[dict[str, Any]], bytes]) -> None:
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send_bytes(handle(orjson.loads(request)))


def main(conn: Connection, config: WorkerConfig) -> None:
    """Entry point of the worker process (the `target` the parent gives to `multiprocessing`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the node's to handle, not each worker's
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    _die_with_parent()
    _die_with_node(conn)
    try:
        registry = load_registry(config.registry_factory, config.strict_plugins)
        os.makedirs(config.work_dir, exist_ok=True)
        os.chdir(config.work_dir)
        limit_memory(config.memory_limit_mb)
    except BaseException as exc:
        conn.send_bytes(orjson.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}))
        return
    conn.send_bytes(orjson.dumps({"ready": True, "pid": os.getpid(), "types": registry.names()}))
    _serve(conn, lambda request: run_one(registry, config, request))
