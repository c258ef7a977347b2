"""Sending a file range as a response body (`runtime/filesend.py`), on uvloop and on asyncio's own loop:
the bytes arrive whole and after what the transport still held, a stalled reader is cut off, a file
shorter than promised ends the body early, and no descriptor outlives a cancelled send."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from swarm.runtime import filesend

LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Awaitable[Any]], Any]]:
    with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
        yield runner.run


@pytest.fixture
def blocking() -> Iterator[Callable[..., Awaitable[Any]]]:
    pool = concurrent.futures.ThreadPoolExecutor(2)

    async def call(function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, function, *args)

    yield call
    pool.shutdown()


@pytest.fixture
def short_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that takes nothing for half a second has stalled."""
    monkeypatch.setattr(filesend, "IO_TIMEOUT_S", 0.5)


def _file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "data"
    path.write_bytes(os.urandom(size))
    return path


def _sending(
    path: Path, start: int, length: int, blocking: Callable[..., Awaitable[Any]]
) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    """A handler that sends `length` bytes of `path` from `start`."""

    async def handler(writer: asyncio.StreamWriter) -> None:
        with path.open("rb") as file:
            await filesend.send_file_range(writer, file, start, length, blocking)

    return handler


async def _serve_once(
    handler: Callable[[asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.Server, int, asyncio.Future[BaseException | None]]:
    """A server on a free loopback port that runs `handler` on its first connection; the future says
    how the handler ended (None: it returned)."""
    ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(writer)
            ended.set_result(None)
        except BaseException as exc:  # the test asks how it ended
            ended.set_result(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], ended


async def _read_all(port: int, delay: float = 0.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(delay)
    data = await reader.read()
    writer.close()
    return data


def test_a_range_arrives_whole_after_the_head_the_transport_still_held(
    run: Callable[[Awaitable[Any]], Any], blocking: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    path = _file(tmp_path, 20 << 20)
    head = b"H" * (4 << 20)  # more than the socket takes at once: the transport keeps the rest

    async def main() -> bytes:
        async def handler(writer: asyncio.StreamWriter) -> None:
            writer.write(head)
            await _sending(path, 1000, (12 << 20) + 7, blocking)(writer)

        _, port, ended = await _serve_once(handler)
        data = await _read_all(port, delay=0.2)  # a reader that comes late: the head is still queued
        assert await ended is None
        return data

    data = run(main())
    assert data == head + path.read_bytes()[1000 : 1000 + (12 << 20) + 7]


def test_a_file_shorter_than_the_range_ends_the_body_early(
    run: Callable[[Awaitable[Any]], Any], blocking: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    path = _file(tmp_path, 1 << 20)

    async def main() -> tuple[bytes, BaseException | None]:
        _, port, ended = await _serve_once(_sending(path, 0, 2 << 20, blocking))
        data = await _read_all(port)
        return data, await ended

    data, ended = run(main())
    assert data == path.read_bytes()
    assert isinstance(ended, ConnectionError) and "bytes early" in str(ended)


@pytest.mark.usefixtures("short_stall")
def test_a_reader_that_stops_reading_is_cut_off(
    run: Callable[[Awaitable[Any]], Any], blocking: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    path = _file(tmp_path, 32 << 20)

    async def main() -> BaseException | None:
        _, port, ended = await _serve_once(_sending(path, 0, 32 << 20, blocking))
        client = socket.create_connection(("127.0.0.1", port))
        try:  # connected, and never reads a byte
            return await asyncio.wait_for(ended, 10)
        finally:
            client.close()

    assert isinstance(run(main()), TimeoutError)


@pytest.mark.usefixtures("short_stall")
def test_a_cancelled_send_leaves_no_descriptor_behind(
    run: Callable[[Awaitable[Any]], Any], blocking: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    path = _file(tmp_path, 32 << 20)

    async def main() -> None:
        server, port, ended = await _serve_once(_sending(path, 0, 32 << 20, blocking))
        client = socket.create_connection(("127.0.0.1", port))
        await asyncio.sleep(0.2)  # the thread is now waiting for room in the socket
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        assert isinstance(await ended, asyncio.CancelledError)
        client.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(1.0)  # the thread gives up on its own at its deadline, and closes its copies

    before = _open_sockets_and(path)
    run(main())
    assert _open_sockets_and(path) <= before


def _open_sockets_and(path: Path) -> int:
    """How many of this process's descriptors are sockets or `path` (libuv keeps a /dev/null of its own,
    opened at the first accept, which is not ours to count)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, gone
            continue
        count += target.startswith("socket:") or target == str(path)
    return count
