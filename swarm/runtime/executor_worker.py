"""The child side of `swarm.runtime.executor`: one long-lived worker process running one task at a time.

Theory of operation
-------------------
The parent starts the process with a `WorkerConfig` and one end of a pipe (a sandboxed worker gets the
pipe as an inherited descriptor and the config as its first message, see `sandbox_main`). The worker puts
itself in its own process group (so the parent can kill it together with anything a task started), then
enters its confinement before any task code is imported (`_confine`): when the node runs as root it drops
to the task user (supplementary groups, group, user, and `no_new_privs` so no set-user-id program can
give them back), it replaces the node's environment with a minimal one (the node's variables may hold
credentials), and drops relative `sys.path` entries (they would name the task's work directory, where a
task could plant a module for the next). Only then does it load its `Registry` (plugins are task code
too), cap its address space, and answer `{"ready": true}` (with its task types and the plugins it
skipped, which the node logs), or `{"ready": false, "error": ...}` if it cannot serve, which the parent
turns into a start-up error: the task user cannot reach its directories, the worker imported another
`swarm` package than the node did, or one of swarm's own task types does not load. Then it loops:
receive one request (orjson bytes), run it, send one reply (orjson bytes), until the pipe reaches end
of file, which means the parent is gone or shutting down. A task still running then is killed at once
(`_die_with_node`), not left to finish unseen.

Each request names the attempt's private work directory, made by the parent: the attempt runs there, with
`HOME` and `TMPDIR` pointing at it. Afterwards the worker goes back to its own directory; a sandboxed
worker also kills whatever the task left running in its PID namespace and empties its private /tmp and
/dev/shm (`sandbox_tmp`), so the next attempt starts clean.

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
import tempfile
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
from swarm.runtime.sandbox_tmp import PrivateTmp
from swarm.taskapi import DataPlane, TaskContext, TaskPolicy

__all__ = [
    "MAX_ERROR_CHARS",
    "SANDBOX_ENV",
    "TaskUser",
    "WorkerConfig",
    "drop_privileges",
    "load_registry",
    "main",
    "run_one",
    "sandbox_main",
    "swarm_package_dir",
]

MAX_ERROR_CHARS = 16_000
#: A worker's whole environment between attempts (each attempt adds its SWARM_*, HOME and TMPDIR).
SANDBOX_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_REAP_WAIT_S = 0.1

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
class TaskUser:
    """The unprivileged user a root node's workers become."""

    name: str
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything a worker needs, passed once at start; plain data so every start method can pickle it.

    `work_dir` is the worker's own directory, where it waits between attempts (each attempt gets a
    private one inside it). `user` is whom to become (None: stay who we are). `sandboxed` says the worker
    runs as bwrap's second process in a PID namespace of its own, `sys_path` what the node's `sys.path`
    was (a sandboxed interpreter starts with `-I` and learns it here).
    """

    node_id: str
    work_dir: str
    policy: TaskPolicy = field(default_factory=TaskPolicy)
    data: DataPlane = field(default_factory=DataPlane)
    memory_limit_mb: int | None = None
    registry_factory: str | None = None
    max_result_bytes: int = 16 * 1024 * 1024
    strict_plugins: bool = True
    user: TaskUser | None = None
    sandboxed: bool = False
    #: The sandbox's tmpfs directories of its own (`executor_proc.private_dirs`), emptied after each attempt.
    private_dirs: tuple[str, ...] = ()
    sys_path: tuple[str, ...] = ()
    #: The directory of the node's `swarm` package: the worker must have imported the same one.
    swarm_dir: str = ""


def swarm_package_dir() -> str:
    """Where this process imported the `swarm` package from ("" for a namespace package, which has no
    `__init__.py`: a directory named swarm that merely shadows the real package)."""
    import swarm

    return os.path.dirname(os.path.abspath(swarm.__file__)) if getattr(swarm, "__file__", None) else ""


def _check_same_swarm(config: WorkerConfig) -> None:
    """Refuse to serve with another `swarm` than the node's: its task types would not be the node's."""
    if not config.swarm_dir:
        return
    mine = swarm_package_dir()
    if mine != config.swarm_dir:
        found = mine or "a directory without __init__.py (a checkout's parent on the import path?)"
        raise RuntimeError(
            f"this worker imported the swarm package from {found}, the node from {config.swarm_dir}; "
            "start the node from another working directory"
        )


def load_registry(factory: str | None, strict: bool = True) -> Any:
    """Build the worker's registry: the installed plugins, or `module:callable` (used by tests).

    A lenient registry stays quiet (the node logs what the hello reports) but still refuses to serve
    when one of swarm's own task types does not load."""
    if factory is None:
        registry = Registry.from_entry_points(strict=strict, quiet=True)
        if registry.builtin_problems:
            raise RuntimeError(f"swarm's own task types do not load: {registry.builtin_problems[0]}")
        return registry
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


def _prctl(option: int, value: int) -> bool:
    """One prctl(2) call where there is one (Linux); whether it succeeded."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return int(ctypes.CDLL(None).prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker if its parent dies mid-task (best effort).

    Call it after `drop_privileges`: the kernel clears the setting when the effective user changes.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def drop_privileges(user: TaskUser) -> None:
    """Become `user` for good: no supplementary groups, real, effective and saved ids all changed.

    `no_new_privs` is set as well, so task code cannot regain privileges through a set-user-id program
    such as sudo. Raises if root could still be regained, so a worker never runs a task half-dropped.
    """
    os.setgroups([])
    ids: tuple[int, ...]
    if hasattr(os, "setresuid"):
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
        ids = (*os.getresuid(), *os.getresgid())
    else:  # macOS: as root, setuid and setgid set the real, effective and saved ids alike
        os.setgid(user.gid)
        os.setuid(user.uid)
        ids = (os.getuid(), os.geteuid(), os.getgid(), os.getegid())
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    if 0 in ids:
        raise PermissionError(f"could not drop root privileges to user {user.name!r}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PermissionError(f"user {user.name!r} could become root again")


def _check_reach(config: WorkerConfig) -> None:
    """Fail start-up, naming the path and the remedy, if the task user cannot reach what it needs."""
    needs = [
        (config.work_dir, os.X_OK, "its work directory"),
        (os.path.dirname(os.__file__), os.R_OK | os.X_OK, "the Python standard library"),
        (os.path.dirname(os.path.dirname(__file__)), os.R_OK | os.X_OK, "the swarm package"),
    ]
    if config.data.directory:
        needs.append((config.data.directory, os.W_OK | os.X_OK, "the data plane directory"))
    for path, mode, what in needs:
        if not os.access(path, mode):
            user = config.user.name if config.user else str(os.getuid())
            raise PermissionError(
                f"task code runs as user {user!r}, who cannot reach {what} ({path}): make it reachable "
                f"by that user (every directory above it too), set [tasks] run_as to a user who can, "
                f"or install bubblewrap so that tasks run in a sandbox"
            )


def _in_own_pid_namespace() -> bool:
    """Whether bwrap's init is our pid 1, so that kill(-1) reaches only this sandbox."""
    try:
        with open("/proc/1/comm") as f:
            return f.read().strip() == "bwrap"
    except OSError:
        return False


def _confine(config: WorkerConfig) -> None:
    """Everything that must happen before any task code is imported (see the module docstring)."""
    if config.sys_path:
        sys.path[:] = config.sys_path
    sys.path[:] = [p for p in sys.path if os.path.isabs(p)]
    if config.sandboxed and not _in_own_pid_namespace():
        raise RuntimeError("a sandboxed worker is not in a PID namespace of its own")
    if config.user is not None:
        drop_privileges(config.user)
        _check_reach(config)
    elif config.sandboxed:
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    _die_with_parent()
    _set_environment(SANDBOX_ENV)
    os.chdir(config.work_dir)


def _run_as_batch_work() -> None:
    """Tell the Linux scheduler that this worker, and every program its tasks start (they inherit it),
    is batch work (SCHED_BATCH). A worker woken by a request then does not preempt its node's event
    loop, which goes on handing out the rest of a batch of attempts first (3-7 % more trivial tasks a
    second on two cores). Elsewhere workers run as any process does.

    A lone attempt's worker so reads its request later: 0.3 ms after the node sent it against 0.1 ms as
    a plain process, in a trace of 400 one-task jobs. Yet untraced, a lone task did not start sooner
    with plain workers (start p50 1.92 against 1.79 ms over 8 alternated pairs of 400 tasks), so
    workers stay batch work whether or not their node is busy."""
    if hasattr(os, "SCHED_BATCH"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


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


def _set_environment(wanted: dict[str, str]) -> None:
    """Make `os.environ` exactly `wanted`, touching only the variables that differ.

    Whatever the previous attempt set is gone, and an attempt that set nothing costs the few variables
    that name the new attempt: clearing and refilling the whole environment took 20 us, a seventh of
    what a trivial task costs its worker.
    """
    for key in [key for key in os.environ if key not in wanted]:
        del os.environ[key]
    for key, value in wanted.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _enter_attempt(config: WorkerConfig, task_id: str, attempt: int, work_dir: str) -> None:
    _set_environment(
        {
            **SANDBOX_ENV,
            "SWARM_NODE_ID": config.node_id,
            "SWARM_TASK_ID": task_id,
            "SWARM_ATTEMPT": str(attempt),
            "SWARM_WORK_DIR": work_dir,
            "HOME": work_dir,
            "TMPDIR": work_dir,
        }
    )
    tempfile.tempdir = work_dir  # the module caches the first answer it found
    os.chdir(work_dir)


def _leave_attempt(config: WorkerConfig) -> None:
    """Step out of the attempt's directory (the parent retires it); in a sandbox, kill what the task
    left running, before the reply tells the parent the directory is free."""
    with contextlib.suppress(OSError):
        os.chdir(config.work_dir)
    if not config.sandboxed:
        return
    with contextlib.suppress(OSError):
        os.kill(-1, signal.SIGKILL)  # all but bwrap's init and us: only this sandbox (`_confine` checked)
    _reap(_REAP_WAIT_S)


def _reap(patience: float) -> None:
    """Collect our children just killed, waiting at most `patience` seconds for the slowest to die.

    A killed child not yet collected is still a process (a zombie): the next attempt must not see it.
    """
    deadline = time.monotonic() + patience
    with contextlib.suppress(ChildProcessError):  # no children left: the usual, immediate case
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.001)


def run_one(registry: Any, config: WorkerConfig, request: dict[str, Any]) -> bytes:
    """Run one request in its attempt's work directory and return the encoded reply.

    Never raises for anything the task does.
    """
    task_id, attempt = str(request["task_id"]), int(request["attempt"])
    work_dir = str(request.get("work_dir") or config.work_dir)
    ctx = TaskContext(config.node_id, task_id, attempt, work_dir, config.policy, config.data)
    try:
        _enter_attempt(config, task_id, attempt, work_dir)
    except OSError as exc:  # the attempt's directory is not usable: fail this attempt only
        _leave_attempt(config)
        return _reply("error", time.time(), error=f"could not enter the work directory: {exc}")
    try:
        return _run_attempt(registry, config, request, ctx)
    finally:
        _leave_attempt(config)


def _run_attempt(registry: Any, config: WorkerConfig, request: dict[str, Any], ctx: TaskContext) -> bytes:
    started = time.time()
    try:
        handler = registry.get(request["type"])
        handler.validate(request["payload"])
        result = handler.run(ctx, request["payload"])
    except (Exception, SystemExit) as exc:  # SystemExit too: sys.exit() in task code fails the attempt
        kind = _classify(exc)
        retry_after = exc.delay if isinstance(exc, Retry) else None
        error = _error_text(exc, kind)
        if isinstance(exc, MemoryError) and config.memory_limit_mb:
            # Under the limit a large allocation fails long before the machine runs out: say which limit.
            error += (
                f" (this node lets a task use {config.memory_limit_mb} MiB of address space beyond its"
                " worker's: raise [tasks] memory_limit_mb in the node's config, or give the job more,"
                " smaller tasks)"
            )
        return _reply(kind, started, error=error, retry_after=retry_after)
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


def _serve(conn: Connection, handle: Callable[[dict[str, Any]], bytes], after: Callable[[], None]) -> None:
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send_bytes(handle(orjson.loads(request)))
        after()


def _network_types(registry: Any) -> list[str]:
    """The task types whose handlers declare that they need the network."""
    return [name for name in registry.names() if getattr(registry.get(name), "network", False) is True]


def main(conn: Connection, config: WorkerConfig) -> None:
    """Entry point of the worker process (the `target` the parent gives to `multiprocessing`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the node's to handle, not each worker's
    if hasattr(os, "setpgrp"):
        with contextlib.suppress(OSError):  # a sandboxed worker already leads its own session
            os.setpgrp()
    _run_as_batch_work()
    _die_with_node(conn)
    try:
        _confine(config)
        _check_same_swarm(config)
        registry = load_registry(config.registry_factory, config.strict_plugins)
        limit_memory(config.memory_limit_mb)
        scratch = [PrivateTmp.take(directory) for directory in config.private_dirs]
        hello = {"ready": True, "pid": os.getpid(), "types": registry.names()}
        hello["network_types"] = _network_types(registry)
        hello["problems"] = list(getattr(registry, "problems", ()))
    except BaseException as exc:
        conn.send_bytes(orjson.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}))
        return
    conn.send_bytes(orjson.dumps(hello))

    def clear_scratch() -> None:
        for directory in scratch:
            directory.clear()

    _serve(conn, lambda request: run_one(registry, config, request), clear_scratch)


def sandbox_main() -> None:
    """Entry point of a worker started inside bubblewrap: `sys.argv[1]` is its inherited pipe end."""
    conn = Connection(int(sys.argv[1]))
    config = conn.recv()  # from the node that started us: trusted, and the one pickle we accept
    if not isinstance(config, WorkerConfig):
        raise SystemExit(f"expected a WorkerConfig first, got {type(config).__name__}")
    main(conn, config)
