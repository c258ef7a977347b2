"""One slot of an executor's pool: the worker process that serves it, from one worker to the next.

A slot holds one worker at a time. A worker that was killed (a timeout, a cancel) or died is replaced in
the background by `replace`, and the slot's next attempt waits for the replacement in `worker`. A worker
that answered `attempts_per_worker` attempts gets a successor, started beside it by `served` while it goes
on serving; the successor takes the slot between two attempts, so no attempt waits for a process start
(the executor's docstring says why workers are succeeded). Which process a worker is, and how it starts,
is the executor's business: the slot gets a `spawn` function.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from swarm.runtime.executor_dirs import AttemptDir
from swarm.runtime.executor_proc import WorkerProcess

__all__ = ["Slot"]

log = logging.getLogger(__name__)


class Slot:
    """One worker's place in a pool: the current worker, the start of its replacement or successor."""

    def __init__(
        self,
        index: int,
        network: bool,
        directory: str,
        *,
        spawn: Callable[[Slot], Coroutine[Any, Any, WorkerProcess]],
        chore: Callable[[asyncio.Future[Any]], object],
        attempts_per_worker: int,
        name: str,
    ) -> None:
        """`spawn` starts a worker for this slot; `chore` tracks background work the executor's close
        waits for; `name` prefixes the names of the slot's asyncio tasks."""
        self.index = index
        self.network = network
        self.directory = directory
        self.fresh: AttemptDir | None = None  # the next attempt's directory (the executor's `_after_attempt`)
        self._spawn = spawn
        self._chore = chore
        self._attempts_per_worker = attempts_per_worker
        self._name = name
        self.current: WorkerProcess | None = None
        self._starting: asyncio.Task[WorkerProcess] | None = None
        self._successor: asyncio.Task[WorkerProcess] | None = None
        self._served = 0  # attempts the current worker answered
        #: Whose attempts the current worker has run (`Assignment.owner`); None: none yet.
        self.owner: str | None = None
        self._closed = False

    @property
    def replacing(self) -> bool:
        """Whether a replacement worker is starting (the last attempt did not end cleanly)."""
        return self._starting is not None

    async def start(self) -> WorkerProcess:
        """Start the slot's first worker and wait until it is ready."""
        self.current = await self._spawn(self)
        return self.current

    async def worker(self, owner: str) -> WorkerProcess | None:
        """The slot's live worker for an attempt of `owner`, waiting for a replacement or starting one;
        None once closed. A worker that ran another owner's attempts is replaced first: whatever their
        task code left in its interpreter (a thread, a patched module) must not meet this one's."""
        if self._successor is not None and self._successor.done():
            self._succeed(self._successor)
        if self.owner is not None and self.owner != owner:
            self.replace()
        if self._starting is None and (self.current is None or not self.current.alive):
            self.replace()  # died while idle, an earlier start failed, or never started (lazy pool)
        if self._starting is not None:
            starting = self._starting
            try:
                self.current = await asyncio.shield(starting)
            finally:
                if starting.done():
                    self._starting = None
        if self._closed:
            return None
        self.owner = owner
        return self.current

    def replace(self) -> None:
        """Kill the slot's worker and start its replacement in the background (not once closed)."""
        old = self.current
        if old is not None:
            old.kill()
        if self._closed:
            return  # close() reaps the worker itself
        self.current, self._served, self.owner = None, 0, None
        if self._successor is not None:
            self._chore(asyncio.ensure_future(_discard(self._successor)))
            self._successor = None

        async def restart() -> WorkerProcess:
            if old is not None:
                await old.stop(grace=0.0)
            return await self._spawn(self)

        name = f"{self._name}.respawn-{self.index}"
        self._starting = asyncio.get_running_loop().create_task(restart(), name=name)

    def served(self) -> None:
        """One more attempt answered: past `attempts_per_worker`, start the worker's successor."""
        self._served += 1
        if self._served >= self._attempts_per_worker and self._successor is None and not self._closed:
            name = f"{self._name}.successor-{self.index}"
            self._successor = asyncio.get_running_loop().create_task(self._spawn(self), name=name)

    def _succeed(self, successor: asyncio.Task[WorkerProcess]) -> None:
        """The successor started (or failed to): it takes the idle slot, and the old worker stops."""
        self._successor, self._served = None, 0
        problem = "cancelled" if successor.cancelled() else successor.exception()
        if problem is not None:
            log.warning("a successor worker did not start (the current one goes on): %s", problem)
            return
        old, self.current, self.owner = self.current, successor.result(), None
        if old is not None:
            self._chore(asyncio.ensure_future(old.stop(grace=2.0)))

    def close(self) -> list[Coroutine[Any, Any, None]]:
        """Start nothing more; what stops every worker of the slot, started or starting."""
        self._closed = True
        stops = [_discard(start) for start in (self._starting, self._successor) if start is not None]
        if self.current is not None:
            stops.append(self.current.stop(grace=2.0))
        return stops


async def _discard(start: asyncio.Task[WorkerProcess]) -> None:
    """Stop the worker a start made, once it has; nothing if the start failed."""
    try:
        worker = await start
    except BaseException:
        return
    await worker.stop(grace=2.0)
