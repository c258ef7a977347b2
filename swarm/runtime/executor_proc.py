"""The parent's handle on one worker process of `swarm.runtime.executor`.

A `WorkerProcess` owns the process and the parent's end of its pipe. The event loop watches the pipe
(`add_reader`, or a reader thread on loops without it, such as Windows' proactor), so a reply costs no
thread hop where the platform allows. At most one request is in flight; its future resolves with the reply
bytes, or with None when the worker died, was killed, or closed the pipe.

Killing targets the worker's process group (the worker makes itself a group leader), so programs a task
started die with it. The group id stays allocated while any member lives, which is what makes signalling it
after the leader died safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import orjson

from swarm.errors import ConfigError
from swarm.runtime.executor_worker import WorkerConfig, main

__all__ = ["WorkerProcess"]


class WorkerProcess:
    """One started worker; create it with `await WorkerProcess.start(...)`."""

    def __init__(self, proc: BaseProcess, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.proc = proc
        assert proc.pid is not None, "the process must be started"
        self.pid: int = proc.pid
        self.alive = True
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
        except NotImplementedError:
            threading.Thread(target=self._read_forever, name=f"{proc.name}.reader", daemon=True).start()

    @classmethod
    async def start(cls, mp: Any, config: WorkerConfig, name: str, timeout: float) -> WorkerProcess:
        """Start a worker from context `mp` and await its ready message; `ConfigError` if it cannot serve."""
        parent, child = mp.Pipe(duplex=True)
        proc: BaseProcess = mp.Process(target=main, args=(child, config), name=name, daemon=True)
        try:
            proc.start()
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()  # else the parent would never see end-of-file when the worker dies
        worker = cls(proc, parent, asyncio.get_running_loop())
        try:
            await asyncio.wait_for(asyncio.shield(worker._ready), timeout)
        except BaseException as exc:
            worker.kill()
            await worker.stop(grace=0.0)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"{name} did not start within {timeout} s") from None
            raise
        return worker

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
