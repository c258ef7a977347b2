"""The parent's handle on one worker process of `swarm.runtime.executor`, and how workers are started.

A `WorkerProcess` owns the process and the parent's end of its pipe. The event loop watches the pipe
(`add_reader`, or a reader thread on loops without it, such as Windows' proactor), so a reply costs no
thread hop where the platform allows. At most one request is in flight; its future resolves with the reply
bytes, or with None when the worker died, was killed, or closed the pipe.

Killing targets the worker's process group (the worker makes itself a group leader), so programs a task
started die with it. The group id stays allocated while any member lives, which is what makes signalling it
after the leader died safe.

Two ways to start a worker
--------------------------
*Plain* (`WorkerProcess.start`): a `multiprocessing` process, forked from the fork server where there is
one, so a replacement costs a fork. *Sandboxed* (`WorkerProcess.start_sandboxed`): a fresh interpreter
started by bubblewrap (`sandbox_argv`), which cannot be forked from a server outside the namespaces; it
inherits one end of a socket pair as a plain descriptor, receives its `WorkerConfig` as the first
message, and from then on speaks the same protocol. `_SandboxedProcess` gives the `Popen` the small part
of multiprocessing's process interface this module uses, with a pidfd as the exit sentinel. bwrap runs in
a session of its own and with `--die-with-parent`, so killing its process group (or the node dying)
takes the whole sandbox down: the worker is its second process, under bwrap's init, in a pid namespace
that ends with that init.

The sandbox (`sandbox_argv`): read-only system directories (/usr, /etc and the /bin, /lib* links or
directories), the Python installation, the entries of `sys.path` and the directories of the task
plugins; a fresh /proc, a minimal /dev (plus GPU device nodes where there are any), a private /tmp and
/dev/shm; writable only the worker's own directory under the node's work dir, the data-plane directory
and the owner's `allowed_paths`; new IPC, PID, UTS and cgroup namespaces, and a new network namespace
(no network at all) unless the worker serves tasks that need network. Mounts go parents first, so a
directory nested in another keeps its own mode: the swarm package stays read-only even inside a
writable allowed path. The directories above a bound path are made 0755 in the sandbox, not copied
from the host, where they often are a root node's 0700 home or temporary directory. As root, bwrap
needs no user namespace and the worker itself drops to the task user; otherwise bwrap creates one,
mapping the node's own user.

`runnable_levels` is the one place that decides which levels this machine can give (`detect_isolation`
is the strongest of them): root gives "user" and never "process"; a bwrap that starts (`bwrap ... true`
with the namespaces a worker gets, tried once) adds "sandbox"; a node that is not root gives "process"
and, with bwrap, "sandbox".
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import importlib.metadata
import importlib.util
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import orjson

import swarm
from swarm.devices.capabilities import ISOLATION_LEVELS
from swarm.errors import ConfigError
from swarm.runtime.executor_worker import SANDBOX_ENV, TaskUser, WorkerConfig, main

__all__ = [
    "SandboxSpec",
    "WorkerProcess",
    "detect_isolation",
    "find_bwrap",
    "is_root",
    "private_dirs",
    "python_paths",
    "runnable_levels",
    "sandbox_argv",
    "task_user",
]

log = logging.getLogger(__name__)

_BWRAP = "/usr/bin/bwrap"  # Debian's; found on PATH elsewhere
_SYSTEM_DIRS = ("/usr", "/etc")
#: The sandbox's own /tmp and /dev/shm (where POSIX shared memory and semaphores live), each a fresh
#: tmpfs that every user may write to, emptied after every attempt.
_PRIVATE_DIRS = (Path("/tmp"), Path("/dev/shm"))
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_GPU_DEVICES = ("/dev/dri", "/dev/nvidia*", "/dev/kfd")
_PROBE_TIMEOUT_S = 10.0
_BOOT = "from swarm.runtime.executor_worker import sandbox_main; sandbox_main()"


# -- what this machine can give -------------------------------------------------------------------------
def is_root() -> bool:
    """Whether the node runs with the effective user id 0 (never on platforms without user ids)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def task_user(run_as: str | None) -> TaskUser | None:
    """The unprivileged user task code runs as when the node is root (`run_as`, else nobody); else None.

    A node that is not root cannot change users, so its tasks run as itself.
    """
    if not is_root():
        return None
    import pwd

    name = run_as or "nobody"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"[tasks] run_as: no user {name!r} on this machine") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise ConfigError(f"[tasks] run_as: {name!r} is root; task code must run without privileges")
    return TaskUser(name, entry.pw_uid, entry.pw_gid)


def find_bwrap() -> str | None:
    """bubblewrap's path, if it is installed and this platform can have user namespaces at all."""
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return None
    found = _BWRAP if os.access(_BWRAP, os.X_OK) else shutil.which("bwrap")
    return found


def sandbox_works(bwrap: str) -> bool:
    """Start the sandbox this executor would use around `true`, once; log why when it cannot."""
    argv = [*sandbox_argv(SandboxSpec(bwrap, (), (), network=False, chdir="/")), "/usr/bin/true"]
    try:
        done = subprocess.run(
            argv,
            check=False,
            env=SANDBOX_ENV,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("bubblewrap cannot start here (%s); tasks are not sandboxed", exc)
        return False
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        log.info("bubblewrap cannot start here (%s); tasks are not sandboxed", reason)
        return False
    return True


def runnable_levels() -> tuple[str, ...]:
    """The isolation levels an executor can run at here, weakest first."""
    levels = ["user"] if is_root() else ["process"]
    bwrap = find_bwrap()
    if bwrap is not None and sandbox_works(bwrap):
        levels.append("sandbox")
    return tuple(sorted(levels, key=ISOLATION_LEVELS.index))


def detect_isolation() -> str:
    """The strongest isolation level this machine gives task code (see the module docstring)."""
    return runnable_levels()[-1]


# -- the sandbox ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """What one sandboxed worker sees: paths bound at the same place, read-only or writable."""

    bwrap: str
    readonly: tuple[str, ...]
    writable: tuple[str, ...]
    network: bool
    chdir: str


_Mount = tuple[str, int, list[str]]  # (where, rank at equal depth, bwrap arguments)
_SPECIAL, _WRITABLE, _READONLY = 0, 1, 2


def _system_mounts() -> list[_Mount]:
    mounts: list[_Mount] = [
        ("/proc", _SPECIAL, ["--proc", "/proc"]),
        ("/dev", _SPECIAL, ["--dev", "/dev"]),
    ]
    mounts += [(str(d), _SPECIAL, ["--perms", "1777", "--tmpfs", str(d)]) for d in _PRIVATE_DIRS]
    mounts += [(path, _READONLY, ["--ro-bind", path, path]) for path in _SYSTEM_DIRS]
    for path in _SYSTEM_LINKS:
        if os.path.islink(path):
            mounts.append((path, _SPECIAL, ["--symlink", os.readlink(path), path]))  # merged /usr
        elif os.path.isdir(path):
            mounts.append((path, _READONLY, ["--ro-bind", path, path]))
    for pattern in _GPU_DEVICES:
        mounts += [(path, _SPECIAL, ["--dev-bind", path, path]) for path in sorted(glob.glob(pattern))]
    return mounts


def _ordered(mounts: Iterable[_Mount]) -> list[str]:
    """Mounts parents first, so the more specific one is in force where two nest; at one path a
    read-only bind goes last and wins (the package stays read-only inside a writable allowed path)."""
    args: list[str] = []
    for _, _, mount_args in sorted(mounts, key=lambda m: (len(Path(m[0]).parts), m[1], m[0])):
        args += mount_args
    return args


def sandbox_argv(spec: SandboxSpec) -> list[str]:
    """The bwrap command line, up to the program to run (see the module docstring for its shape)."""
    args = [spec.bwrap, "--die-with-parent", "--new-session"]
    args += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if not is_root():
        args.append("--unshare-user")  # unprivileged bwrap needs it; root keeps real ids to drop them
    if not spec.network:
        args.append("--unshare-net")
    mounts = _system_mounts()
    writable = [p for p in dict.fromkeys(spec.writable) if os.path.exists(p)]
    # A read-only path that holds /tmp (a node started from a script in /tmp has it on `sys.path`) would
    # replace the sandbox's private /tmp with the host's: tasks would read every other user's files,
    # and emptying it after each attempt would walk the whole host /tmp (0.1 s a task).
    readonly = [
        p
        for p in dict.fromkeys(spec.readonly)
        if os.path.exists(p) and not any(d.is_relative_to(p) for d in _PRIVATE_DIRS)
    ]
    mounts += [(path, _WRITABLE, ["--bind", path, path]) for path in writable]
    mounts += [(path, _READONLY, ["--ro-bind", path, path]) for path in readonly]
    mounts += _parent_dirs([*writable, *readonly], {m[0] for m in mounts})
    return [*args, *_ordered(mounts), "--chdir", spec.chdir]


def private_dirs(spec: SandboxSpec) -> tuple[str, ...]:
    """The sandbox's private /tmp and /dev/shm that are its own: no writable path (an allowed path the
    owner gave, such as /tmp itself) is bound over them. Only those may a worker empty after an attempt."""
    return tuple(
        str(d) for d in _PRIVATE_DIRS if not any(d.is_relative_to(os.path.abspath(p)) for p in spec.writable)
    )


def _parent_dirs(paths: Iterable[str], targets: set[str]) -> list[_Mount]:
    """The directories above the bound paths, made 0755 in the sandbox's own file system.

    bwrap would otherwise copy the host's modes onto them, and a root node's paths often sit under a
    0700 directory (/root, a private temporary) that the task user could not pass through.
    """
    parents = {str(parent) for path in paths for parent in Path(path).parents}
    return [(d, _SPECIAL, ["--perms", "0755", "--dir", d]) for d in sorted(parents - targets - {"/"})]


def _plugin_dirs() -> list[str]:
    """Where the installed task plugins' top-level modules live (without importing them)."""
    dirs: list[str] = []
    for ep in importlib.metadata.entry_points(group="swarm.tasks"):
        with contextlib.suppress(ImportError, ValueError, AttributeError):
            spec = importlib.util.find_spec(ep.module.partition(".")[0])
            if spec is not None and spec.submodule_search_locations:
                dirs += list(spec.submodule_search_locations)
            elif spec is not None and spec.origin and os.path.isabs(spec.origin):
                dirs.append(os.path.dirname(spec.origin))
    return dirs


def python_paths() -> tuple[str, ...]:
    """What a sandboxed interpreter must read: the installation, `sys.path`, swarm and its plugins."""
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates += [os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))]
    candidates += [p for p in sys.path if os.path.isabs(p)]
    candidates += [*swarm.__path__, *_plugin_dirs()]
    return tuple(dict.fromkeys(os.path.abspath(c) for c in candidates if c and os.path.exists(c)))


def start_fork_server(mp: Any) -> None:
    """Start `mp`'s fork server (if it is the forkserver context) without the working directory on its
    import path.

    The server runs `python -c ...`, which puts the working directory first on `sys.path`, and imports
    the worker code before any worker can correct its path: started from a directory that holds a
    checkout named `swarm` (a home directory, under systemd or Termux), it would import that directory
    as a namespace package instead of the installed `swarm`, and every worker would lose its task types.
    `PYTHONSAFEPATH` (Python 3.11+) leaves the working directory out; it is set only while the server
    starts. Nothing happens if the server already runs.
    """
    if mp.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    saved = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            os.environ.pop("PYTHONSAFEPATH", None)
        else:
            os.environ["PYTHONSAFEPATH"] = saved


class _Process(Protocol):
    """The part of `multiprocessing.process.BaseProcess` that `WorkerProcess` uses."""

    @property
    def name(self) -> str: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def exitcode(self) -> int | None: ...
    @property
    def sentinel(self) -> int: ...
    def kill(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...


class _SandboxedProcess:
    """A bwrap `Popen` dressed as a multiprocessing process; its sentinel is a pidfd."""

    def __init__(self, popen: subprocess.Popen[bytes], name: str) -> None:
        self._popen = popen
        self.name = name
        self.pid: int | None = popen.pid
        self.sentinel: int = os.pidfd_open(popen.pid)

    @property
    def exitcode(self) -> int | None:
        """None while running; negative for a signal, as multiprocessing reports it."""
        code = self._popen.poll()
        if code is not None and code > 128 and code - 128 in signal.valid_signals():
            return -(code - 128)  # bwrap exits 128+N when the worker inside died of signal N
        return code

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self._popen.kill()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)

    def close(self) -> None:
        if self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1


class WorkerProcess:
    """One started worker; create it with `await WorkerProcess.start(...)` or `start_sandboxed(...)`."""

    def __init__(self, proc: _Process, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.proc = proc
        assert proc.pid is not None, "the process must be started"
        self.pid: int = proc.pid
        self.alive = True
        self.hello: dict[str, Any] = {}
        self._conn = conn
        self._loop = loop
        self._ready: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._reply: asyncio.Future[bytes | None] | None = None
        self._exited: asyncio.Future[None] | None = None
        self._exitcode: int | None = None
        self._watching = False
        self._watching_sentinel = False
        self._closed = False
        try:
            loop.add_reader(conn.fileno(), self._on_readable)
            self._watching = True
            # uvloop (libuv) makes a watched descriptor non-blocking, but a Connection sends and receives
            # whole messages with blocking calls: a request or reply larger than the socket's buffer
            # (about 200 KB) failed half-way, which looked like a worker that had died.
            os.set_blocking(conn.fileno(), True)
        except NotImplementedError:
            threading.Thread(target=self._read_forever, name=f"{proc.name}.reader", daemon=True).start()

    @classmethod
    async def start(cls, mp: Any, config: WorkerConfig, name: str, timeout: float) -> WorkerProcess:
        """Start a worker from context `mp` and await its ready message; `ConfigError` if it cannot serve."""
        parent, child = mp.Pipe(duplex=True)
        proc = mp.Process(target=main, args=(child, config), name=name, daemon=True)
        try:
            proc.start()
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()  # else the parent would never see end-of-file when the worker dies
        return await cls(proc, parent, asyncio.get_running_loop())._await_ready(name, timeout)

    @classmethod
    async def start_sandboxed(
        cls, spec: SandboxSpec, config: WorkerConfig, name: str, timeout: float
    ) -> WorkerProcess:
        """Start a worker inside bubblewrap (see the module docstring) and await its ready message."""
        parent, child = multiprocessing.Pipe(duplex=True)
        argv = [*sandbox_argv(spec), sys.executable, "-I", "-B", "-c", _BOOT, str(child.fileno())]
        try:
            popen = subprocess.Popen(
                argv,
                pass_fds=(child.fileno(),),
                env=SANDBOX_ENV,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: killing the group kills bwrap, and so the sandbox
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        worker = cls(_SandboxedProcess(popen, name), parent, asyncio.get_running_loop())
        with contextlib.suppress(OSError, ValueError):  # it died at once: the ready wait reports how
            parent.send(config)
        return await worker._await_ready(name, timeout)

    async def _await_ready(self, name: str, timeout: float) -> WorkerProcess:
        try:
            self.hello = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except BaseException as exc:
            self.kill()
            await self.stop(grace=0.0)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"{name} did not start within {timeout} s") from None
            raise
        return self

    # -- reading -------------------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        try:
            data: bytes | None = self._conn.recv_bytes()
        except (EOFError, OSError):
            data = None
        self._deliver(data)

    def _read_forever(self) -> None:
        while True:
            try:
                data: bytes | None = self._conn.recv_bytes()
            except (EOFError, OSError):
                data = None
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._deliver, data)
            if data is None:
                return

    def _deliver(self, data: bytes | None) -> None:
        """Route one message (or end-of-file as None) to whoever waits for it."""
        if data is None:
            self.alive = False
            self._unwatch()
        if not self._ready.done():
            self._on_hello(data)
            return
        reply, self._reply = self._reply, None
        if reply is not None and not reply.done():
            reply.set_result(data)

    def _on_hello(self, data: bytes | None) -> None:
        if data is None:
            self._ready.set_exception(ConfigError(f"{self.proc.name} exited during start-up"))
            return
        hello = orjson.loads(data)
        if hello.get("ready"):
            self._ready.set_result(hello)
        else:
            self._ready.set_exception(ConfigError(f"{self.proc.name} could not start: {hello.get('error')}"))

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            self._loop.remove_reader(self._conn.fileno())

    # -- requests ------------------------------------------------------------------------------------------
    def request(self, data: bytes) -> asyncio.Future[bytes | None]:
        """Send one request; the future resolves with the reply, or None if the worker goes away."""
        reply: asyncio.Future[bytes | None] = self._loop.create_future()
        self._reply = reply
        try:
            self._conn.send_bytes(data)
        except (OSError, ValueError):  # broken pipe, or the connection is already closed
            self.alive = False
            self._reply = None
            reply.set_result(None)
        return reply

    # -- ending ---------------------------------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL the worker's process group now; a pending request resolves with None."""
        self.alive = False
        if not self._closed:
            if hasattr(os, "killpg"):
                with contextlib.suppress(OSError):
                    os.killpg(self.pid, signal.SIGKILL)
            if self.proc.exitcode is None:
                with contextlib.suppress(OSError):
                    self.proc.kill()
        reply, self._reply = self._reply, None
        if reply is not None and not reply.done():
            reply.set_result(None)

    def _exit_future(self) -> asyncio.Future[None]:
        """A future that resolves when the process has exited (its sentinel becomes readable)."""
        if self._exited is None:
            exited: asyncio.Future[None] = self._loop.create_future()
            self._exited = exited
            sentinel = self.proc.sentinel

            def on_exit() -> None:
                self._unwatch_sentinel()
                if not exited.done():
                    exited.set_result(None)

            try:
                self._loop.add_reader(sentinel, on_exit)
                self._watching_sentinel = True
            except NotImplementedError:
                joined = self._loop.run_in_executor(None, self.proc.join)
                joined.add_done_callback(lambda _: None if exited.done() else exited.set_result(None))
        return self._exited

    def _unwatch_sentinel(self) -> None:
        if self._watching_sentinel:
            self._watching_sentinel = False
            self._loop.remove_reader(self.proc.sentinel)

    async def exit_code(self, timeout: float) -> int | None:
        """Wait up to `timeout` for the process to end and return its exit code (negative: signal)."""
        if self._closed:
            return self._exitcode
        if self.proc.exitcode is not None:
            return self.proc.exitcode
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exit_future()), timeout)
        code: int | None = self.proc.exitcode
        return code

    async def stop(self, grace: float) -> None:
        """End the worker: close its pipe (it exits), after `grace` seconds kill it, then reap it."""
        if self._closed:
            return
        self._unwatch()
        self._conn.close()
        if grace <= 0 or await self.exit_code(grace) is None:
            self.kill()
            await self.exit_code(5.0)
        self.alive = False
        self._exitcode = self.proc.exitcode
        self._closed = True
        self._unwatch_sentinel()
        if self._exitcode is not None:
            self.proc.close()
