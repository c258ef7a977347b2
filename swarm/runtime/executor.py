"""Run task attempts off the event loop, in a pool of worker processes with time and memory limits.

Theory of operation
-------------------
The executor owns `slots` slots; each slot holds one long-lived worker process (see `executor_worker`)
that runs one task at a time. A `run()` call takes a free slot (waiting in FIFO order when all are busy),
sends the request down the slot's pipe, and awaits the reply, which the event loop reads as soon as the
pipe is readable. Workers are reused, so a trivial task costs a pipe round trip, not a process start.

Rules:

* Workers come from the `forkserver` start method where the platform has it, else `spawn`; never `fork`,
  because the node's process runs asyncio and other threads whose locks a forked child could inherit held.
  Both re-import the main module in the child, so a script that starts an executor needs the usual
  `if __name__ == "__main__":` guard (console scripts have it).
* Whatever happens to the task, `run()` returns an `Outcome` and never raises (except `CancelledError`:
  cancelling the awaiting coroutine kills the worker and propagates, as structured concurrency expects).
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
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Literal, get_args

import orjson

from swarm.errors import ConfigError
from swarm.runtime.executor_proc import WorkerProcess
from swarm.runtime.executor_worker import WorkerConfig
from swarm.taskapi import DataPlane, TaskPolicy

__all__ = ["Executor", "Outcome", "OutcomeKind"]

log = logging.getLogger(__name__)

OutcomeKind = Literal[
    "ok", "error", "retry", "fatal", "timeout", "crash", "refused", "invalid", "unknown_type"
]
_KINDS: frozenset[str] = frozenset(get_args(OutcomeKind))
_StopReason = Literal["cancelled", "timeout", "closed"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended; `started_at`/`finished_at` are `time.time()` in the worker when it got there."""

    ok: bool
    result: Any = None
    error: str | None = None
    kind: OutcomeKind = "ok"
    retry_after: float | None = None
    started_at: float = 0.0
    finished_at: float = 0.0


def _failed(kind: OutcomeKind, error: str, started_at: float) -> Outcome:
    return Outcome(ok=False, error=error, kind=kind, started_at=started_at, finished_at=time.time())


def _decode(data: bytes) -> Outcome:
    """Turn a worker's reply into an `Outcome`; a malformed reply is an executor error, not a crash."""
    msg = orjson.loads(data)
    kind = msg.get("kind")
    if kind not in _KINDS:
        return _failed("error", f"worker sent an unknown outcome kind {kind!r}", time.time())
    return Outcome(
        ok=kind == "ok",
        result=msg.get("result"),
        error=msg.get("error"),
        kind=kind,
        retry_after=msg.get("retry_after"),
        started_at=float(msg.get("started_at", 0.0)),
        finished_at=float(msg.get("finished_at", 0.0)),
    )


def _exit_description(code: int | None) -> str:
    if code is None:
        return "worker process died"
    if code < 0:
        try:
            return f"worker process killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker process killed by signal {-code}"
    return f"worker process exited with code {code}"


class _Slot:
    """One unit of concurrency: the current worker, or the task starting its replacement."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.worker: WorkerProcess | None = None
        self.starting: asyncio.Task[WorkerProcess] | None = None


@dataclass(eq=False, slots=True)
class _Job:
    """One `run()` call, tracked so that `cancel()` and `close()` can reach it wherever it is."""

    task_id: str
    waiter: asyncio.Future[_Slot | None] | None = None
    slot: _Slot | None = None
    stop_reason: _StopReason | None = None


class Executor:
    """A pool of `slots` worker processes; use as `async with Executor(...) as ex: await ex.run(...)`."""

    def __init__(
        self,
        slots: int = 1,
        node_id: str = "local",
        policy: TaskPolicy | None = None,
        memory_limit_mb: int | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        *,
        registry_factory: str | None = None,
        strict_plugins: bool = True,
        max_result_bytes: int = 16 * 1024 * 1024,
        data: DataPlane | None = None,
        start_method: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        """Configure the pool; nothing starts until `__aenter__`.

        `memory_limit_mb` is the address space a task may add to an idle worker (RLIMIT_AS, where the
        platform has it). `work_dir=None` means a fresh temporary directory, removed on exit.
        `registry_factory` ("module:callable") replaces the installed plugins in the workers;
        `strict_plugins=False` makes the workers skip broken plugins, as a lenient node registry does.
        `data` tells tasks where the node keeps bulk data and the URL its data server has.
        """
        if slots < 1:
            raise ValueError("slots must be at least 1")
        if start_method is None:
            methods = multiprocessing.get_all_start_methods()
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        if start_method == "fork":
            raise ValueError("the fork start method is unsafe in a process running asyncio threads")
        self.slots = slots
        self.node_id = node_id
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
        self._slots: list[_Slot] = []
        self._idle: collections.deque[_Slot] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[_Slot | None]] = collections.deque()
        self._jobs: set[_Job] = set()
        self._open = False

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def __aenter__(self) -> Executor:
        """Start every worker and wait until each has loaded its registry; raise `ConfigError` if not."""
        if self._work_dir is None:
            self._work_dir = tempfile.mkdtemp(prefix="swarm-work-")
        os.makedirs(self._work_dir, exist_ok=True)
        self._config = WorkerConfig(
            node_id=self.node_id,
            work_dir=self._work_dir,
            policy=self._policy,
            data=self._data,
            memory_limit_mb=self._memory_limit_mb,
            registry_factory=self._registry_factory,
            max_result_bytes=self._max_result_bytes,
            strict_plugins=self._strict_plugins,
        )
        self._slots = [_Slot(i) for i in range(self.slots)]
        self._open = True
        started = await asyncio.gather(*(self._spawn(s) for s in self._slots), return_exceptions=True)
        for slot, worker in zip(self._slots, started, strict=True):
            if isinstance(worker, WorkerProcess):
                slot.worker = worker
            self._idle.append(slot)
        failures = [w for w in started if isinstance(w, BaseException)]
        if failures:
            await self.close()
            raise failures[0]
        return self

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
                waiter.set_result(None)
        for job in self._jobs:
            self._stop(job, "closed")
        stops = []
        for slot in self._slots:
            if slot.starting is not None:
                stops.append(self._discard_start(slot.starting))
            if slot.worker is not None:
                stops.append(slot.worker.stop(grace=2.0))
        await asyncio.gather(*stops, return_exceptions=True)
        if self._own_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)

    async def _discard_start(self, task: asyncio.Task[WorkerProcess]) -> None:
        try:
            worker = await task
        except BaseException:
            return
        await worker.stop(grace=2.0)

    async def _spawn(self, slot: _Slot) -> WorkerProcess:
        """Start one worker and wait for its ready message."""
        name = f"swarm[{self.node_id}].worker-{slot.index}"
        return await WorkerProcess.start(self._mp, self._config, name, self._start_timeout)

    def _replace(self, slot: _Slot) -> None:
        """Kill the slot's worker and start its replacement in the background (not after `close`)."""
        old = slot.worker
        if old is not None:
            old.kill()
        if not self._open:
            return  # close() reaps slot.worker itself
        slot.worker = None

        async def restart() -> WorkerProcess:
            if old is not None:
                await old.stop(grace=0.0)
            return await self._spawn(slot)

        name = f"swarm[{self.node_id}].executor.respawn-{slot.index}"
        slot.starting = asyncio.get_running_loop().create_task(restart(), name=name)

    async def _worker_for(self, slot: _Slot) -> WorkerProcess | None:
        """The slot's live worker, waiting for a replacement or starting one; None once closed."""
        if slot.starting is None and (slot.worker is None or not slot.worker.alive):
            self._replace(slot)  # died while idle, or an earlier start failed
        if slot.starting is not None:
            starting = slot.starting
            try:
                slot.worker = await asyncio.shield(starting)
            finally:
                if starting.done():
                    slot.starting = None
        return slot.worker if self._open else None

    # -- slots -------------------------------------------------------------------------------------------
    async def _acquire(self, job: _Job) -> _Slot | None:
        """Take a free slot, or wait in line for one; None means the job was cancelled or we closed."""
        if self._idle:
            return self._idle.popleft()
        waiter: asyncio.Future[_Slot | None] = asyncio.get_running_loop().create_future()
        job.waiter = waiter
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                self._release(waiter.result())  # handed a slot just as we were cancelled: pass it on
            raise
        finally:
            job.waiter = None

    def _release(self, slot: _Slot | None) -> None:
        if slot is None:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._idle.append(slot)

    def _stop(self, job: _Job, reason: _StopReason) -> None:
        """Stop a job wherever it is: waiting for a slot, or running (which kills its worker)."""
        if job.stop_reason is not None:
            return
        job.stop_reason = reason
        if job.waiter is not None and not job.waiter.done():
            job.waiter.set_result(None)
        elif job.slot is not None and job.slot.worker is not None:
            job.slot.worker.kill()

    def cancel(self, task_id: str) -> bool:
        """Stop every attempt of `task_id` here; its `run()` returns kind "error", error "cancelled"."""
        found = False
        for job in list(self._jobs):
            if job.task_id == task_id and job.stop_reason is None:
                self._stop(job, "cancelled")
                found = True
        return found

    @property
    def running(self) -> list[str]:
        """Task ids currently holding a worker (for status reports)."""
        return [job.task_id for job in self._jobs if job.slot is not None]

    # -- running -----------------------------------------------------------------------------------------
    async def run(
        self, task_id: str, attempt: int, task_type: str, payload: dict[str, Any], timeout: float | None
    ) -> Outcome:
        """Run one attempt in a worker process and return how it ended; never raises for task failures."""
        begun = time.time()
        job = _Job(task_id)
        self._jobs.add(job)
        try:
            return await self._run(job, attempt, task_type, payload, timeout)
        except Exception as exc:  # a bug of ours must fail this attempt, not the node
            log.exception("executor failed running %s attempt %s", task_id, attempt)
            return _failed("error", f"executor error: {type(exc).__name__}: {exc}", begun)
        finally:
            self._jobs.discard(job)

    async def _run(
        self, job: _Job, attempt: int, task_type: str, payload: dict[str, Any], timeout: float | None
    ) -> Outcome:
        begun = time.time()
        if not self._open:
            return _failed("error", "executor is not running", begun)
        request = {"task_id": job.task_id, "attempt": attempt, "type": task_type, "payload": payload}
        try:
            data = orjson.dumps(request)
        except TypeError as exc:
            return _failed("invalid", f"payload is not JSON-serialisable: {exc}", begun)
        slot = await self._acquire(job)
        try:
            if slot is None or job.stop_reason is not None:
                return self._stopped(job, timeout, begun)
            return await self._dispatch(slot, job, data, timeout, begun)
        finally:
            self._release(slot)

    async def _dispatch(
        self, slot: _Slot, job: _Job, data: bytes, timeout: float | None, begun: float
    ) -> Outcome:
        """Send the request to the slot's worker and wait for the reply, the timeout or the worker's end."""
        try:
            worker = await self._worker_for(slot)
        except (ConfigError, OSError, TimeoutError) as exc:
            return _failed("crash", f"could not start a worker process: {exc}", begun)
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
            self._replace(slot)
            raise
        finally:
            job.slot = None
            if timer is not None:
                timer.cancel()
        if job.stop_reason is not None:
            self._replace(slot)
            return self._stopped(job, timeout, sent)
        if answer is None:
            code = await worker.exit_code(timeout=1.0)
            self._replace(slot)
            return _failed("crash", _exit_description(code), sent)
        return _decode(answer)

    def _stopped(self, job: _Job, timeout: float | None, begun: float) -> Outcome:
        if job.stop_reason == "timeout":
            return _failed("timeout", f"timed out after {timeout} s; worker process killed", begun)
        if job.stop_reason == "cancelled":
            return _failed("error", "cancelled", begun)
        return _failed("error", "executor shut down", begun)
