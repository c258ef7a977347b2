"""Run task attempts off the event loop, in pools of worker processes, as isolated as this machine allows.

Theory of operation
-------------------
The executor owns `slots` slots of concurrency; each slot holds one long-lived worker process (see
`executor_worker`) that runs one task at a time. A `run()` call takes a free slot (waiting in FIFO order
when all are busy), sends the request down the slot's pipe, and awaits the reply, which the event loop
reads as soon as the pipe is readable. Workers are reused, so a trivial task costs a pipe round trip, not a
process start.

Isolation. At start the executor asks `executor_proc.runnable_levels` what this machine can give and runs
at the strongest level (or the weakest one at least as strong as the `isolation` it was given):

* "process": a worker process of its own, with a time limit (the task's timeout, else the policy's
  `default_timeout_s`) and a memory limit (`memory_limit_mb` of address space above the idle worker).
* "user": also an unprivileged user. A node running as root never runs task code as root: its workers
  drop to the policy's `run_as` user (default `nobody`) before they import any plugin. That user must be
  able to reach the Python installation, the package, the node's work dir and the data-plane directory;
  the executor hands it the latter and each attempt's directory (chown), and a worker that still cannot
  reach what it needs fails start-up with the path and the remedy, so the node never falls back to root.
* "sandbox": also bubblewrap namespaces (see `executor_proc` for what a sandbox contains): a read-only
  system, a private /tmp, its own PID namespace, and no network.

Every attempt gets a private work directory (`executor_dirs`) inside the worker's own directory under
the node's work dir, named in the request, empty when the attempt starts; when the attempt ends the
directory is removed, or passed on to the slot's next attempt if the attempt left it untouched and
nothing of the attempt can still reach it (see `_after_attempt`).

Why long-lived sandboxed workers, not one bwrap per attempt. A sandboxed worker is a fresh interpreter
(bubblewrap cannot fork it from a server outside the namespaces), so its start costs an interpreter start
and the plugin imports, about 0.35 s on this project's test VM; paid per attempt, that would make a trivial
task a thousand times slower. Paid once per worker (a plain worker pays about 0.25 s, for the same
imports), it leaves a trivial task at a pipe round trip: measured one after another, an echo task took
about 0.25 ms in a sandbox, 0.18 ms at the "process" level and 0.06-0.1 ms before per-attempt directories
and isolation existed (docs/jobs.md). Only a replacement after a timeout or crash pays the start again.
A worker that served `attempts_per_worker` attempts is succeeded by a new one, started beside it while
it goes on serving, so no attempt waits: what a process accumulates over many attempts stays bounded (the
C library keeps every environment string ever set, about 400 bytes an attempt here, 40 MB after 100,000;
and whatever task code leaks), as Celery's `max_tasks_per_child` and `Pool(maxtasksperchild=)` do.
`executor_slot` holds each slot's worker, from one to the next.
What a long-lived sandbox could carry from one attempt to the next is cleared between attempts: the
attempt's directory is removed unless the attempt left it untouched, the worker kills every process left
in its PID namespace before it replies, and empties its /tmp and /dev/shm after. What task code leaves
in the worker's own interpreter (a thread, a patched module, an import hook) cannot be cleared, so a
worker serves one owner (the principal who submitted the job, `run(..., owner=)`): an attempt of
another owner gets a slot whose worker is fresh or already its owner's, else the worker idle longest is
replaced before it runs, at the cost of a worker start.

Network is per worker, since a namespace is fixed when bwrap starts: at the "sandbox" level there are two
pools of `slots` workers, without and with network, sharing the `slots` tokens of concurrency. A task runs
in the network pool when its requirements ask for network (`run(..., network=True)`) or its handler
declares it (a true `network` attribute, as the MapReduce handlers do). The network pool
starts lazily, worker by worker, on first use; below "sandbox" every task shares one pool.

Rules:

* Plain workers come from the `forkserver` start method where the platform has it, else `spawn`; never
  `fork`, because the node's process runs asyncio and other threads whose locks a forked child could
  inherit held. Both re-import the main module in the child, so a script that starts an executor needs the
  usual `if __name__ == "__main__":` guard (console scripts have it).
* Whatever happens to the task, `run()` returns an `Outcome` (`executor_outcome`) and never raises
  (except `CancelledError`: cancelling the awaiting coroutine kills the worker and propagates, as
  structured concurrency expects).
* A timeout, a `cancel()` or a worker dying all end the same way: the worker's process group is killed, the
  attempt gets its outcome (`timeout`, `error`/"cancelled", `crash`), and a replacement worker starts in the
  background for that slot. One bad task costs one attempt and one process start, never the node or the
  other slots.
* Once the executor kills a worker, the reason recorded on the job decides the outcome, even if a reply
  was already on its way: one rule, so a race cannot turn a timeout into a success.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from swarm.devices.capabilities import ISOLATION_LEVELS, isolation_rank
from swarm.errors import ConfigError
from swarm.runtime.executor_dirs import (
    AttemptDir,
    fresh_dir,
    hand_over,
    new_attempt_dir,
    renamed,
    rmtree,
    untouched,
    warn_unwritable,
)
from swarm.runtime.executor_outcome import Outcome, decode, exit_description, failed
from swarm.runtime.executor_proc import (
    SandboxSpec,
    WorkerProcess,
    find_bwrap,
    is_root,
    private_dirs,
    python_paths,
    runnable_levels,
    start_fork_server,
    task_user,
)
from swarm.runtime.executor_slot import Slot
from swarm.runtime.executor_worker import TaskUser, WorkerConfig, swarm_package_dir
from swarm.taskapi import DEFAULT_MEMORY_LIMIT_MB, DataPlane, TaskPolicy

__all__ = ["Executor"]

log = logging.getLogger(__name__)

#: Attempts a worker serves before a successor takes its place (see the module docstring).
ATTEMPTS_PER_WORKER = 10_000

_StopReason = Literal["cancelled", "timeout", "closed"]
_FILE_THREADS = 2


def _choose_level(wanted: str | None, runnable: tuple[str, ...]) -> str:
    """The strongest runnable level, or the weakest runnable one at least as strong as `wanted`."""
    if wanted is None:
        return runnable[-1]
    for level in runnable:
        if isolation_rank(level) >= isolation_rank(wanted):
            return level
    raise ConfigError(
        f"this node cannot give isolation {wanted!r} (it can give {', '.join(runnable)}; "
        f"'user' needs the node to run as root, 'sandbox' needs a working bubblewrap)"
    )


@dataclass(eq=False, slots=True)
class _Job:
    """One `run()` call, tracked so that `cancel()` and `close()` can reach it wherever it is."""

    task_id: str
    attempt: int
    owner: str
    waiter: asyncio.Future[bool] | None = None
    slot: Slot | None = None
    stop_reason: _StopReason | None = None


class Executor:
    """Pools of worker processes, `slots` at a time; `async with Executor(...) as ex: await ex.run(...)`."""

    def __init__(
        self,
        slots: int = 1,
        node_id: str = "local",
        policy: TaskPolicy | None = None,
        memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB,
        work_dir: str | os.PathLike[str] | None = None,
        *,
        registry_factory: str | None = None,
        strict_plugins: bool = True,
        max_result_bytes: int = 16 * 1024 * 1024,
        data: DataPlane | None = None,
        start_method: str | None = None,
        start_timeout: float = 60.0,
        isolation: str | None = None,
        attempts_per_worker: int = ATTEMPTS_PER_WORKER,
    ) -> None:
        """Configure the pool; nothing starts until `__aenter__`.

        `memory_limit_mb` is the address space a task may add to an idle worker (RLIMIT_AS, where the
        platform has it; None: unlimited). `work_dir=None` means a fresh temporary directory, removed on
        exit. `registry_factory` ("module:callable") replaces the installed plugins in the workers;
        `strict_plugins=False` makes the workers skip broken plugins, as a lenient node registry does.
        `data` tells tasks where the node keeps bulk data and the URL its data server has. `isolation`
        is the weakest level to run at (None: the strongest this machine gives); see the module docstring.
        A worker is succeeded after `attempts_per_worker` attempts.
        """
        if slots < 1:
            raise ValueError("slots must be at least 1")
        if isolation is not None and isolation not in ISOLATION_LEVELS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATION_LEVELS)}, got {isolation!r}")
        if start_method is None:
            methods = multiprocessing.get_all_start_methods()
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        if start_method == "fork":
            raise ValueError("the fork start method is unsafe in a process running asyncio threads")
        self.slots = slots
        self.node_id = node_id
        self._attempts_per_worker = attempts_per_worker
        #: The level tasks run at; final once the executor has started.
        self.isolation = isolation or ISOLATION_LEVELS[0]
        self._wanted = isolation
        self._mp = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # Workers fork from a server that has already imported the worker code, so replacing a
            # killed worker costs a fork, not a fresh import (process-wide; takes effect when it starts).
            self._mp.set_forkserver_preload(["__main__", "swarm.runtime.executor_worker"])
        self._policy = policy or TaskPolicy()
        self._data = data or DataPlane()
        self._memory_limit_mb = memory_limit_mb
        self._work_dir = None if work_dir is None else os.fspath(work_dir)
        self._own_work_dir = work_dir is None
        self._registry_factory = registry_factory
        self._strict_plugins = strict_plugins
        self._max_result_bytes = max_result_bytes
        self._start_timeout = start_timeout
        self._user: TaskUser | None = None
        self._sandbox: SandboxSpec | None = None
        #: Task types whose handlers declare `network = True`, as the workers' hellos report them.
        self._network_types: set[str] = set()
        self._pools: dict[bool, list[Slot]] = {}
        self._idle: dict[bool, collections.deque[Slot]] = {}
        self._tokens = 0
        self._waiters: collections.deque[asyncio.Future[bool]] = collections.deque()
        self._jobs: set[_Job] = set()
        self._chores: set[asyncio.Future[Any]] = set()
        self._files: concurrent.futures.ThreadPoolExecutor | None = None
        self._open = False

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def __aenter__(self) -> Executor:
        """Decide the isolation level, start every worker and wait until each has loaded its registry.

        Raises `ConfigError` if the level cannot be given or a worker cannot serve.
        """
        if self._work_dir is None:
            self._work_dir = tempfile.mkdtemp(prefix="swarm-work-")
            os.chmod(self._work_dir, 0o711)  # the task user passes through to its own directories
        os.makedirs(self._work_dir, exist_ok=True)
        try:
            await asyncio.to_thread(self._prepare)
        except BaseException:
            self._remove_own_work_dir()
            raise
        self._config = WorkerConfig(
            node_id=self.node_id,
            work_dir=self._work_dir,
            policy=self._policy,
            data=self._data,
            memory_limit_mb=self._memory_limit_mb,
            registry_factory=self._registry_factory,
            max_result_bytes=self._max_result_bytes,
            strict_plugins=self._strict_plugins,
            user=self._user,
            sandboxed=self._sandbox is not None,
            private_dirs=private_dirs(self._sandbox) if self._sandbox is not None else (),
            sys_path=tuple(sys.path),
            swarm_dir=swarm_package_dir(),
        )
        self._files = concurrent.futures.ThreadPoolExecutor(_FILE_THREADS, thread_name_prefix="swarm-files")
        self._open = True
        await self._start_pool(False)
        who = f", tasks run as {self._user.name}" if self._user else ""
        log.info("executor: %d slot(s), isolation %s%s", self.slots, self.isolation, who)
        return self

    def _prepare(self) -> None:
        """The blocking part of starting: the level, the task user, the pools' directories."""
        self.isolation = _choose_level(self._wanted, runnable_levels())
        if self.isolation == "process" and is_root():
            raise ConfigError("a node running as root must not run task code as root (isolation 'process')")
        self._user = task_user(self._policy.run_as)
        if self._user is not None:
            if self._data.directory:
                hand_over(self._data.directory, self._user)
            warn_unwritable(self._policy.allowed_paths, self._user)
        bwrap = find_bwrap()
        if self.isolation == "sandbox" and bwrap is not None:
            writable = [os.path.abspath(p) for p in (self._data.directory, *self._policy.allowed_paths) if p]
            readonly = (*python_paths(), *self._policy.allowed_commands)
            self._sandbox = SandboxSpec(bwrap, readonly, tuple(writable), False, "/")
        assert self._work_dir is not None
        for network in (False, True) if self._sandbox is not None else (False,):
            pool = [self._new_slot(i, network) for i in range(self.slots)]
            self._pools[network] = pool
            self._idle[network] = collections.deque(pool)
        self._tokens = self.slots

    def _new_slot(self, index: int, network: bool) -> Slot:
        assert self._work_dir is not None
        directory = os.path.join(self._work_dir, f"{'net' if network else 'slot'}-{index}")
        fresh_dir(directory)
        return Slot(
            index,
            network,
            directory,
            spawn=self._spawn,
            chore=self._chore,
            attempts_per_worker=self._attempts_per_worker,
            name=f"swarm[{self.node_id}].executor",
        )

    async def _start_pool(self, network: bool) -> None:
        pool = self._pools[network]
        if self._sandbox is None:
            await asyncio.to_thread(start_fork_server, self._mp)
        started = await asyncio.gather(*(slot.start() for slot in pool), return_exceptions=True)
        for worker in started:
            if isinstance(worker, WorkerProcess):
                self._network_types.update(worker.hello.get("network_types", ()))
        problems = next((w.hello.get("problems") for w in started if isinstance(w, WorkerProcess)), None)
        for problem in problems or ():
            log.debug("workers skip a task plugin (the node's registry logged it too): %s", problem)
        failures = [w for w in started if isinstance(w, BaseException)]
        if failures:
            await self.close()
            raise failures[0]

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop every worker (killing busy ones) and reap them all."""
        await self.close()

    async def close(self) -> None:
        """Shut down: waiting and running `run()` calls return an "executor shut down" error outcome."""
        if not self._open:
            return
        self._open = False
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(False)
        for job in self._jobs:
            self._stop(job, "closed")
        stops = [stop for slot in self._all_slots() for stop in slot.close()]
        await asyncio.gather(*stops, return_exceptions=True)
        await asyncio.gather(*self._chores, return_exceptions=True)
        if self._files is not None:
            self._files.shutdown(wait=True)
        for slot in self._all_slots():
            rmtree(slot.directory)
        self._remove_own_work_dir()

    def _remove_own_work_dir(self) -> None:
        if self._own_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)

    def _all_slots(self) -> list[Slot]:
        return [slot for pool in self._pools.values() for slot in pool]

    async def _spawn(self, slot: Slot) -> WorkerProcess:
        """Start one worker for `slot` and wait for its ready message."""
        kind = "net-worker" if slot.network else "worker"
        name = f"swarm[{self.node_id}].{kind}-{slot.index}"
        config = dataclasses.replace(self._config, work_dir=slot.directory)
        if self._sandbox is None:
            return await WorkerProcess.start(self._mp, config, name, self._start_timeout)
        writable = (slot.directory, *self._sandbox.writable)
        spec = dataclasses.replace(
            self._sandbox, writable=writable, network=slot.network, chdir=slot.directory
        )
        return await WorkerProcess.start_sandboxed(spec, config, name, self._start_timeout)

    # -- slots -------------------------------------------------------------------------------------------
    async def _acquire(self, job: _Job, network: bool) -> Slot | None:
        """Take one of the `slots` tokens (in line if none is free) and an idle slot of the pool: the one
        idle longest of those whose worker has served only the job's owner or nobody yet, else the one idle
        longest (its worker is then replaced, see `Slot.worker`).

        None means the job was cancelled or we closed. A pool has a slot for every token, so one is idle
        whenever a token is free.
        """
        if not await self._take_token(job):
            return None
        idle = self._idle[network]
        slot = next((s for s in idle if s.owner in (job.owner, None)), idle[0])
        idle.remove(slot)
        return slot

    async def _take_token(self, job: _Job) -> bool:
        if self._tokens and not self._waiters:
            self._tokens -= 1
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        job.waiter = waiter
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._give_token()  # handed a token just as we were cancelled: pass it on
            raise
        finally:
            job.waiter = None

    def _give_token(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self._tokens += 1

    def _release(self, slot: Slot | None) -> None:
        if slot is None:
            return
        self._idle[slot.network].append(slot)
        self._give_token()

    def _stop(self, job: _Job, reason: _StopReason) -> None:
        """Stop a job wherever it is: waiting for a slot, or running (which kills its worker)."""
        if job.stop_reason is not None:
            return
        job.stop_reason = reason
        if job.waiter is not None and not job.waiter.done():
            job.waiter.set_result(False)
        elif job.slot is not None and job.slot.current is not None:
            job.slot.current.kill()

    def cancel(self, task_id: str, attempt: int | None = None) -> bool:
        """Stop attempt `attempt` of `task_id` here (every attempt of it when None); its `run()` returns
        kind "error", error "cancelled". A newer attempt of the same task may already be starting."""
        found = False
        for job in list(self._jobs):
            if job.task_id == task_id and attempt in (None, job.attempt) and job.stop_reason is None:
                self._stop(job, "cancelled")
                found = True
        return found

    @property
    def running(self) -> list[str]:
        """Task ids currently holding a worker (for status reports)."""
        return [job.task_id for job in self._jobs if job.slot is not None]

    @property
    def worker_pids(self) -> list[int]:
        """Process ids (in the node's PID namespace) of the live workers; a sandbox's is its bwrap's."""
        return [s.current.pid for s in self._all_slots() if s.current is not None and s.current.alive]

    # -- running -----------------------------------------------------------------------------------------
    async def run(
        self,
        task_id: str,
        attempt: int,
        task_type: str,
        payload: dict[str, Any],
        timeout: float | None,
        *,
        network: bool = False,
        owner: str = "",
    ) -> Outcome:
        """Run one attempt in a worker process and return how it ended; never raises for task failures.

        `timeout=None` means the policy's `default_timeout_s`. `network=True` (the task's requirements
        ask for network) runs it in a sandbox with network where tasks are sandboxed. `owner` (the
        principal whose job it is) runs it in a worker that has run nobody else's attempts.
        """
        begun = time.time()
        job = _Job(task_id, attempt, owner)
        self._jobs.add(job)
        if timeout is None:
            timeout = self._policy.default_timeout_s
        try:
            return await self._run(job, attempt, task_type, payload, timeout, network)
        except Exception as exc:  # a bug of ours must fail this attempt, not the node
            log.exception("executor failed running %s attempt %s", task_id, attempt)
            return failed("error", f"executor error: {type(exc).__name__}: {exc}", begun)
        finally:
            self._jobs.discard(job)

    def _pool_for(self, task_type: str, network: bool) -> bool:
        """Whether the attempt goes to the network pool (which exists only at the "sandbox" level)."""
        return True in self._pools and (network or task_type in self._network_types)

    async def _run(
        self,
        job: _Job,
        attempt: int,
        task_type: str,
        payload: dict[str, Any],
        timeout: float | None,
        network: bool,
    ) -> Outcome:
        begun = time.time()
        if not self._open:
            return failed("error", "executor is not running", begun)
        request = {"task_id": job.task_id, "attempt": attempt, "type": task_type, "payload": payload}
        try:
            body = orjson.dumps(request)
        except TypeError as exc:
            return failed("invalid", f"payload is not JSON-serialisable: {exc}", begun)
        slot = await self._acquire(job, self._pool_for(task_type, network))
        try:
            if slot is None or job.stop_reason is not None:
                return self._stopped(job, timeout, begun)
            return await self._attempt(slot, job, body, timeout, begun)
        finally:
            self._release(slot)

    async def _attempt(
        self, slot: Slot, job: _Job, body: bytes, timeout: float | None, begun: float
    ) -> Outcome:
        """Give the attempt its private directory for as long as it runs, whatever way it ends."""
        try:
            work_dir, slot.fresh = slot.fresh or new_attempt_dir(slot.directory, self._user), None
        except OSError as exc:
            return failed("error", f"could not make the attempt's work directory: {exc}", begun)
        try:
            # The directory goes first in the request, spliced in so the payload is encoded once.
            data = b'{"work_dir":' + orjson.dumps(work_dir.path) + b"," + body[1:]
            return await self._dispatch(slot, job, data, timeout, begun)
        finally:
            self._after_attempt(slot, work_dir, ended_cleanly=job.stop_reason is None and not slot.replacing)

    def _after_attempt(self, slot: Slot, used: AttemptDir, ended_cleanly: bool) -> None:
        """Retire the attempt's directory, so that nothing of this attempt reaches the next one's.

        An attempt that ended cleanly and left the directory exactly as it got it passes it on to the
        slot's next attempt; any other is removed on a file thread and the next attempt gets a new one.
        Making and removing a directory can wait on the disk for milliseconds (on this project's test
        VM, whose ext4 is mounted with `discard`, 0.25 ms and 4 ms), which a trivial task would otherwise
        pay twice. How it is passed on depends on what of the attempt can still hold it:

        * In a sandbox, nothing: the worker has killed every process the task started before it
          replies, and no other sandbox sees this slot's directory. The same path serves the next
          attempt (renaming it cost the node about 55 us an attempt on this project's test VM, for
          nothing).
        * At the "process" level, programs the task started can outlive it and write to the path they
          were given: the directory is renamed, so that they write nowhere.
        * At the "user" level, such a program may hold the directory itself open, and must not find
          the next attempt's files in it: the directory is removed.
        """
        if ended_cleanly and self._open and self.isolation != "user" and untouched(used):
            if self._sandbox is not None:
                slot.fresh = used
                return
            with contextlib.suppress(OSError):
                slot.fresh = renamed(used)
                return
        self._chore(asyncio.get_running_loop().run_in_executor(self._files, rmtree, used.path))

    def _chore(self, future: asyncio.Future[Any]) -> asyncio.Future[Any]:
        """Track background file work, so that `close` waits for it."""
        self._chores.add(future)
        future.add_done_callback(self._chores.discard)
        return future

    async def _dispatch(
        self, slot: Slot, job: _Job, data: bytes, timeout: float | None, begun: float
    ) -> Outcome:
        """Send the request to the slot's worker and wait for the reply, the timeout or the worker's end."""
        try:
            worker = await slot.worker(job.owner)
        except (ConfigError, OSError, TimeoutError) as exc:
            return failed("crash", f"could not start a worker process: {exc}", begun)
        if worker is None or job.stop_reason is not None or not self._open:
            return self._stopped(job, timeout, begun)
        job.slot = slot
        sent = time.time()
        reply = worker.request(data)
        loop = asyncio.get_running_loop()
        timer = None if timeout is None else loop.call_later(timeout, self._stop, job, "timeout")
        try:
            answer = await reply
        except asyncio.CancelledError:
            slot.replace()
            raise
        finally:
            job.slot = None
            if timer is not None:
                timer.cancel()
        if job.stop_reason is not None:
            slot.replace()
            return self._stopped(job, timeout, sent)
        if answer is None:
            code = await worker.exit_code(timeout=1.0)
            slot.replace()
            return failed("crash", exit_description(code), sent)
        slot.served()
        return decode(answer)

    def _stopped(self, job: _Job, timeout: float | None, begun: float) -> Outcome:
        if job.stop_reason == "timeout":
            return failed("timeout", f"timed out after {timeout} s; worker process killed", begun)
        if job.stop_reason == "cancelled":
            return failed("error", "cancelled", begun)
        return failed("error", "executor shut down", begun)
