"""The Python client: submit tasks and MapReduce jobs from a program, get futures back.

Synchronous, in the manner of `concurrent.futures`::

    from swarm import Client

    with Client(cluster="home") as swarm:              # finds the broker like the CLI does
        future = swarm.submit("echo", {"message": "hi"}, priority="high", timeout=30)
        print(future.result(timeout=60))               # the task's result, or raises TaskFailed
        squares = swarm.map("python_eval", [{"expression": f"{i} * {i}"} for i in range(10)])
        print(swarm.gather(squares))                   # [0, 1, 4, ...] in order
        swarm.cancel(future)
        print(swarm.status())                          # members, coordinator, epoch

and the same with `async with AsyncClient(...) as swarm:` and `await` (its futures are asyncio futures).
Requirements, retries and priority are `submit`'s keyword arguments, with the names and values of
`docs/jobs.md` (`require={"min_cores": 2, "platform": "linux"}`, `max_retries=2`, `priority="urgent"`).

Each `submit` is one job; `map` is one job of many tasks (a group), so a thousand items cost one
submission. A future resolves when its task's final state is committed: `result()` returns what the task
returned, raises `TaskFailed` (with the error and the state: failed, cancelled, or a rejection) or
`TimeoutError`. Credentials and the broker are found as the CLI finds them: `token=` or `$SWARM_TOKEN`,
else the admin token on the cluster's first machine; `broker=` or `$SWARM_BROKER`, else mDNS.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from swarm.config import load_config
from swarm.core.tracker import JobProgress
from swarm.errors import RemoteError
from swarm.ids import new_job_id
from swarm.jobspec import task_spec
from swarm.messages import SubmitJob, TaskSpec, TaskUpdate

__all__ = ["AsyncClient", "Client", "TaskFailed"]

_T = TypeVar("_T")


class TaskFailed(RemoteError):
    """A task did not succeed: `state` is failed or cancelled (or rejected, for a refused job)."""

    def __init__(self, task_id: str, state: str, error: str | None) -> None:
        super().__init__(f"task {task_id} {state}: {error or 'no error given'}")
        self.task_id = task_id
        self.state = state
        self.error = error


class AsyncClient:
    """The asyncio client (see the module docstring); use as `async with AsyncClient(...) as swarm:`."""

    def __init__(
        self,
        cluster: str | None = None,
        *,
        broker: str | None = None,
        token: str | None = None,
        config: Path | None = None,
    ) -> None:
        self._config = load_config(config, broker=broker, cluster=cluster)
        self._token = token
        self._client: Any = None
        self._watchers: set[asyncio.Task[None]] = set()
        self._broker = ""

    async def __aenter__(self) -> Self:
        from swarm.runtime.client import SwarmClient
        from swarm.runtime.identity import broker_login, client_credential, resolve_broker

        credential = client_credential(self._config.cluster, self._token)
        self._broker = await resolve_broker(self._config, credential.broker_url or None)
        login = broker_login(self._config, credential)
        self._client = SwarmClient(
            self._broker, credential, login=login, max_bytes=self._config.max_message_bytes
        )
        await self._client.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        await self._client.__aexit__(exc_type, exc, tb)

    async def submit(
        self, task_type: str, payload: Mapping[str, Any] | None = None, **options: Any
    ) -> asyncio.Future[Any]:
        """Submit one task; its future resolves to the task's result."""
        (future,) = await self._submit_group(task_type, [payload or {}], options)
        return future

    async def map(
        self, task_type: str, payloads: Iterable[Mapping[str, Any]], **options: Any
    ) -> list[asyncio.Future[Any]]:
        """Submit one task per payload, as one job; their futures, in order."""
        return await self._submit_group(task_type, list(payloads), options)

    async def gather(self, futures: Iterable[asyncio.Future[Any]], timeout: float | None = None) -> list[Any]:
        """The results of `futures`, in order; the first failure raises `TaskFailed`."""
        return list(await asyncio.wait_for(asyncio.gather(*futures), timeout))

    async def cancel(self, target: asyncio.Future[Any] | str) -> None:
        """Cancel a task (by its future or id) or a job (by id); raises `TaskFailed` if refused."""
        task_id = target if isinstance(target, str) else getattr(target, "task_id", "")
        refusal = await self._client.cancel(task_id)
        if refusal is not None:
            raise TaskFailed(task_id, "not cancelled", refusal)

    async def status(self, listen: float = 1.2) -> dict[str, Any]:
        """The members, the coordinator and the epoch; listens up to `listen` seconds (less once every
        member heard is known alive or gone, more while a slow one's live heartbeat may still come)."""
        members = await self._client.watch_members(listen)
        tracker = self._client.tracker
        return {
            "coordinator": tracker.coordinator,
            "epoch": tracker.epoch,
            "nodes": {
                view.node_id: {"state": view.state, "name": view.heartbeat.name if view.heartbeat else None}
                for view in members.values()
            },
        }

    async def mapreduce(
        self,
        app: str | Path,
        inputs: Iterable[Path | str],
        reduces: int,
        output: Path | str,
        params: Mapping[str, str] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Run a MapReduce job to its end (`docs/mapreduce.md`); its outputs land in `output`. Returns
        the job id, its output files and how many maps and reduces ran; raises `TaskFailed` on failure."""
        from swarm.mapreduce.app import resolve_app
        from swarm.mapreduce.plan import MapReduceSpec
        from swarm.mapreduce.submit import run_mapreduce

        spec = MapReduceSpec(
            app=resolve_app(str(app)),
            inputs=tuple(Path(p) for p in inputs),
            reducers=reduces,
            params=dict(params or {}),
            **options,
        )
        job_id = new_job_id()
        progress, shown = await run_mapreduce(self._client, self._broker, job_id, spec, Path(output))
        failed = [u for u in progress.updates.values() if u.state != "done"]
        if progress.rejected or failed:
            first = failed[0] if failed else None
            raise TaskFailed(
                first.task_id if first else job_id,
                first.state if first else "rejected",
                progress.rejected or (first.error if first else None),
            )
        outputs = sorted(str(p) for p in Path(output).glob("mr-out-*"))
        return {"job_id": job_id, "outputs": outputs, "maps": shown.maps, "reduces": shown.reduces}

    async def _submit_group(
        self, task_type: str, payloads: list[Mapping[str, Any]], options: Mapping[str, Any]
    ) -> list[asyncio.Future[Any]]:
        job_id = new_job_id()
        specs = [
            task_spec(f"{job_id}.t{i}", {"type": task_type, "payload": dict(p), **options}, {})
            for i, p in enumerate(payloads)
        ]
        job = SubmitJob(job_id, tuple(specs), kind="group" if len(specs) > 1 else "task")
        loop = asyncio.get_running_loop()
        futures = {spec.task_id: _future(loop, spec) for spec in specs}
        accepted: asyncio.Future[None] = loop.create_future()

        def on_update(progress: JobProgress, fresh: list[TaskUpdate]) -> None:
            if progress.accepted and not accepted.done():
                accepted.set_result(None)
            for update in fresh:
                _settle(futures.get(update.task_id), update)

        async def follow() -> None:
            progress = await self._client.submit(job, wait=True, on_update=on_update)
            if progress.rejected is not None:
                for task_id, future in futures.items():
                    if not future.done():
                        future.set_exception(TaskFailed(task_id, "rejected", progress.rejected))
            if not accepted.done():
                accepted.set_result(None)

        watcher = asyncio.create_task(follow(), name=f"swarm.client[{job_id}]")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        await asyncio.wait([watcher, accepted], return_when=asyncio.FIRST_COMPLETED)
        if watcher.done() and watcher.exception() is not None:
            raise watcher.exception()  # type: ignore[misc]
        return list(futures.values())


def _future(loop: asyncio.AbstractEventLoop, spec: TaskSpec) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = loop.create_future()
    future.task_id = spec.task_id  # type: ignore[attr-defined]
    return future


def _settle(future: asyncio.Future[Any] | None, update: TaskUpdate) -> None:
    if future is None or future.done():
        return
    if update.state == "done":
        future.set_result(update.result)
    else:
        future.set_exception(TaskFailed(update.task_id, update.state, update.error))


class Client:
    """The synchronous client: the asyncio one on a private event-loop thread, with
    `concurrent.futures.Future`s (see the module docstring)."""

    def __init__(
        self,
        cluster: str | None = None,
        *,
        broker: str | None = None,
        token: str | None = None,
        config: Path | None = None,
    ) -> None:
        self._async = AsyncClient(cluster, broker=broker, token=token, config=config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="swarm.client", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        try:
            self._run(self._async.__aenter__())
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._run(self._async.__aexit__(exc_type, exc, tb))
        finally:
            self._stop()

    def submit(
        self, task_type: str, payload: Mapping[str, Any] | None = None, **options: Any
    ) -> concurrent.futures.Future[Any]:
        """Submit one task; a future of its result."""
        return self._wrap(self._run(self._async.submit(task_type, payload, **options)))

    def map(
        self, task_type: str, payloads: Iterable[Mapping[str, Any]], **options: Any
    ) -> list[concurrent.futures.Future[Any]]:
        """One task per payload, as one job; their futures, in order."""
        return [self._wrap(f) for f in self._run(self._async.map(task_type, payloads, **options))]

    def gather(
        self, futures: Iterable[concurrent.futures.Future[Any]], timeout: float | None = None
    ) -> list[Any]:
        """The results of `futures`, in order; the first failure raises `TaskFailed`."""
        return [f.result(timeout) for f in futures]

    def cancel(self, target: concurrent.futures.Future[Any] | str) -> None:
        """Cancel a task (by its future or id) or a job (by id)."""
        task_id = target if isinstance(target, str) else getattr(target, "task_id", "")
        self._run(self._async.cancel(task_id))

    def status(self, listen: float = 1.2) -> dict[str, Any]:
        """The members, the coordinator and the epoch (see `AsyncClient.status`)."""
        return self._run(self._async.status(listen))

    def mapreduce(
        self,
        app: str | Path,
        inputs: Iterable[Path | str],
        reduces: int,
        output: Path | str,
        params: Mapping[str, str] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Run a MapReduce job to its end (see `AsyncClient.mapreduce`)."""
        return self._run(self._async.mapreduce(app, inputs, reduces, output, params, **options))

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _wrap(self, future: asyncio.Future[Any]) -> concurrent.futures.Future[Any]:
        out: concurrent.futures.Future[Any] = concurrent.futures.Future()
        out.task_id = future.task_id  # type: ignore[attr-defined]

        def copy(done: asyncio.Future[Any]) -> None:
            if done.cancelled():
                out.cancel()
            elif done.exception() is not None:
                out.set_exception(done.exception())
            else:
                out.set_result(done.result())

        self._loop.call_soon_threadsafe(future.add_done_callback, copy)
        return out

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
