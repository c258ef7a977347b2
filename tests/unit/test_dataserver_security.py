"""Who a data server serves, and what a peer can hold: capability tokens per job, confinement to the
job's directory, upload budgets, and connection limits against clients that never finish a request.
Everything over loopback; attackers are raw asyncio sockets, legitimate clients the real `datafetch`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from pathlib import Path

import pytest

from swarm.checksum import checksum_bytes
from swarm.errors import InvalidPayload
from swarm.mapreduce.app import AppSource
from swarm.mapreduce.plan import MapReduceSpec, build_job, new_capability, plan_splits
from swarm.mapreduce.tasks import map_handler, reduce_handler
from swarm.runtime import datafetch, dataupload, jobaccess
from swarm.runtime.datafetch import FetchError, fetch, upload
from swarm.runtime.dataserver import DataServer
from swarm.runtime.jobaccess import CAPABILITY_FILE, Capabilities, register_capability, token_digest
from swarm.taskapi import DataPlane, TaskContext, TaskPolicy

LOOPBACK = "127.0.0.1"
TOKEN_A = new_capability()
TOKEN_B = new_capability()
RUN = b"sorted run bytes " * 100


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datafetch, "BACKOFF_BASE_S", 0.001)


@pytest.fixture
def node_root(tmp_path: Path) -> Path:
    """A node's data directory holding one run of job `a` and one of job `b`, each registered."""
    root = tmp_path / "node"
    for job, token in (("a", TOKEN_A), ("b", TOKEN_B)):
        register_capability(root / "mr" / job, token)
        run = root / "mr" / job / "m0-a1" / "part-0.run"
        run.parent.mkdir(parents=True)
        run.write_bytes(job.encode() + RUN)
    (root / "elsewhere").write_bytes(b"not job data")
    return root


async def _request(port: int, request: str) -> tuple[int, bytes]:
    """One raw request; the status and the answer (its head and `Content-Length` bytes of body)."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(request.encode("latin-1"))
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.startswith(b"Content-Length:")
            )
            answer = head + await reader.readexactly(length)
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1]), answer


def _put_head(name: str, length: int, token: str = TOKEN_A) -> str:
    return f"PUT /f/{name} HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: {length}\r\n\r\n"


# -- tokens ---------------------------------------------------------------------------------------------


async def test_a_node_serves_a_jobs_outputs_to_that_jobs_token_only(node_root: Path) -> None:
    async with DataServer(node_root, LOOPBACK) as server:
        url_a, url_b = server.url_for("mr/a/m0-a1/part-0.run"), server.url_for("mr/b/m0-a1/part-0.run")
        assert await asyncio.to_thread(fetch, url_a, token=TOKEN_A) == b"a" + RUN
        assert await asyncio.to_thread(fetch, url_b, token=TOKEN_B) == b"b" + RUN
        for url, token in ((url_b, TOKEN_A), (url_a, TOKEN_B), (url_a, new_capability())):
            with pytest.raises(FetchError) as info:
                await asyncio.to_thread(fetch, url, token=token, retries=3)
            assert info.value.status == 403 and not info.value.retryable
            assert "after 1 attempt" in str(info.value)

        # No token, or a malformed one: 401, and nothing says whether the file exists.
        for path in ("/f/mr/a/m0-a1/part-0.run", "/f/mr/a/m0-a1/missing"):
            for auth in ("", "Authorization: Basic YTpi\r\n", "Authorization: Bearer \r\n"):
                status, answer = await _request(server.port, f"GET {path} HTTP/1.1\r\n{auth}\r\n")
                assert status == 401, (path, auth, answer)
                assert b"WWW-Authenticate: Bearer" in answer and RUN not in answer
        # Only job data is served, and never the capability file.
        auth = f"Authorization: Bearer {TOKEN_A}\r\n"
        for path, expected in [
            ("/f/elsewhere", 403),
            ("/f/mr/c/m0-a1/part-0.run", 403),  # a job this node never heard of
            (f"/f/mr/a/{CAPABILITY_FILE}", 400),
            ("/f/mr/a/%2e%2e/b/m0-a1/part-0.run", 400),
            ("/f/mr/a/m0-a1/missing", 404),
        ]:
            status, answer = await _request(server.port, f"GET {path} HTTP/1.1\r\n{auth}\r\n")
            assert status == expected, (path, answer)
            assert TOKEN_A.encode() not in answer and RUN not in answer
        counters = server.counters
    assert counters["refused_bad_token"] == 4  # three fetches, and the job it never heard of
    assert counters["refused_no_token"] == 6
    assert counters["refused_not_job_data"] == 1


async def test_a_symlink_out_of_the_jobs_directory_is_forbidden(node_root: Path) -> None:
    (node_root / "mr" / "a" / "peek").symlink_to(node_root / "mr" / "b" / "m0-a1")
    (node_root / "mr" / "a" / "up").symlink_to(node_root)
    async with DataServer(node_root, LOOPBACK) as server:
        for path in ("mr/a/peek/part-0.run", "mr/a/up/elsewhere"):
            with pytest.raises(FetchError) as info:
                await asyncio.to_thread(fetch, server.url_for(path), token=TOKEN_A)
            assert info.value.status == 403


async def test_a_restarted_node_serves_the_tokens_its_tasks_registered(node_root: Path) -> None:
    capability = node_root / "mr" / "a" / CAPABILITY_FILE
    assert stat.S_IMODE(capability.stat().st_mode) == 0o600
    again = new_capability()  # the job id submitted again after its submitter died: a second token
    register_capability(node_root / "mr" / "a", again)
    register_capability(node_root / "mr" / "a", again)
    assert capability.read_text().split() == [token_digest(TOKEN_A), token_digest(again)]
    async with DataServer(node_root, LOOPBACK) as server:
        url = server.url_for("mr/a/m0-a1/part-0.run")
        for token in (TOKEN_A, again):
            assert await asyncio.to_thread(fetch, url, token=token) == b"a" + RUN
        # A capability file others may read or write is no grant at all.
        capability.chmod(0o644)
        with pytest.raises(FetchError, match="403"):
            await asyncio.to_thread(fetch, url, token=TOKEN_A)
        capability.chmod(0o600)
        assert await asyncio.to_thread(fetch, url, token=TOKEN_A) == b"a" + RUN
        # The job's data dropped and the id reused: the old token opens nothing.
        capability.unlink()
        register_capability(node_root / "mr" / "a", TOKEN_B)
        with pytest.raises(FetchError, match="403"):
            await asyncio.to_thread(fetch, url, token=TOKEN_A)
        assert await asyncio.to_thread(fetch, url, token=TOKEN_B) == b"a" + RUN


def test_capabilities_compare_every_token_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[str, str]] = []
    real = jobaccess.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(jobaccess.hmac, "compare_digest", spy)
    table = Capabilities(tmp_path, {"j": [TOKEN_A, TOKEN_B]})
    assert table.accepts("j", TOKEN_A) and table.accepts("j", TOKEN_B)
    assert len(compared) == 4  # both known tokens, every time, whichever matches
    assert not table.accepts("j", new_capability()) and not table.accepts("k", TOKEN_A)
    assert not table.accepts("../j", TOKEN_A) and not table.accepts("j", "short")
    with pytest.raises(ValueError):
        table.grant("j", "not a token")
    with pytest.raises(ValueError):
        register_capability(tmp_path / "x", "short")


async def test_what_a_capability_file_holds_opens_nothing(node_root: Path) -> None:
    """A task of another job on the node can read the file (every task runs as one user): the digest it
    finds there is no token, here or on any other node."""
    listed = (node_root / "mr" / "a" / CAPABILITY_FILE).read_text().split()
    assert listed == [token_digest(TOKEN_A)] and TOKEN_A not in listed
    async with DataServer(node_root, LOOPBACK) as server:
        url = server.url_for("mr/a/m0-a1/part-0.run")
        with pytest.raises(FetchError, match="403"):
            await asyncio.to_thread(fetch, url, token=listed[0])
        assert await asyncio.to_thread(fetch, url, token=TOKEN_A) == b"a" + RUN
    # A file written before digests (the token itself) grants nothing: lines that are no digest are skipped.
    (node_root / "mr" / "a" / CAPABILITY_FILE).write_text(f"{TOKEN_A}\n")
    assert not Capabilities(node_root / "mr").accepts("a", TOKEN_A)


def test_a_symlinked_capability_file_is_ignored(tmp_path: Path) -> None:
    register_capability(tmp_path / "real", TOKEN_A)
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / CAPABILITY_FILE).symlink_to(tmp_path / "real" / CAPABILITY_FILE)
    assert not Capabilities(tmp_path).accepts("j", TOKEN_A)
    assert Capabilities(tmp_path).accepts("real", TOKEN_A)


# -- the map task registers its job's token ---------------------------------------------------------------


async def test_a_map_task_registers_its_jobs_token_before_its_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "input.txt"
    data.write_bytes(b"one two two three three three\n" * 50)
    spec = MapReduceSpec(AppSource("wordcount", module="swarm.mapreduce.apps.wordcount"), (data,), 2, {})
    token = new_capability()
    job = build_job("job-1", spec, plan_splits((data,), None), "http://127.0.0.1:9", None, None, token=token)
    mapped, *reduces = job.tasks
    assert {t.payload["token"] for t in job.tasks} == {token}
    node = tmp_path / "node"
    policy = TaskPolicy(allowed_paths=(str(tmp_path),))
    async with DataServer(node, LOOPBACK) as server:
        ctx = TaskContext("n1", "job-1.m0", 1, str(tmp_path), policy, DataPlane(str(node), server.url))
        # the split is read in place (no submitter listens): the point is what the map leaves behind
        monkeypatch.setattr("swarm.mapreduce.tasks.read_local", lambda *_: data.read_bytes())
        result = await asyncio.to_thread(map_handler.run, ctx, mapped.payload)
        capability = node / "mr" / "job-1" / CAPABILITY_FILE
        assert capability.read_text() == f"{token_digest(token)}\n"
        assert stat.S_IMODE(capability.stat().st_mode) == 0o600
        run = result["runs"][1]
        url = f"{result['url']}/f/{run['path']}"
        got = await asyncio.to_thread(fetch, url, token=token, expected_checksum=run["checksum"])
        assert checksum_bytes(got) == run["checksum"]
        with pytest.raises(FetchError, match="403"):
            await asyncio.to_thread(fetch, url, token=TOKEN_A)
    # a job planned without a token (as the simulator plans them) cannot run
    tokenless = build_job("job-2", spec, plan_splits((data,), None), "http://127.0.0.1:9", None)
    for task, handler in zip(tokenless.tasks, (map_handler, reduce_handler, reduce_handler), strict=True):
        with pytest.raises(InvalidPayload, match="token"):
            handler.validate(task.payload)
    with pytest.raises(InvalidPayload, match="job id"):
        map_handler.validate({**mapped.payload, "job": "../escape"})
    assert len(reduces) == 2


# -- uploads --------------------------------------------------------------------------------------------


def submitter(root: Path, **options: object) -> DataServer:
    """A submitter's server for job `j`: three outputs expected, a budget of 3000 bytes, 2000 per upload."""
    defaults: dict[str, object] = {
        "job": "j",
        "capabilities": {"j": TOKEN_A},
        "allow_upload": True,
        "upload_budget": 3000,
        "max_upload_bytes": 2000,
        "upload_names": ["mr-out-0", "mr-out-1", "mr-out-2"],
    }
    return DataServer(root, LOOPBACK, **(defaults | options))  # type: ignore[arg-type]


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


async def test_uploads_are_held_to_the_jobs_names_and_byte_budget(tmp_path: Path) -> None:
    async with submitter(tmp_path) as server:

        async def put(name: str, size: int, token: str = TOKEN_A) -> None:
            await asyncio.to_thread(upload, server.url_for(name), os.urandom(size), token=token, retries=2)

        await put("mr-out-0", 1500)
        await put("mr-out-1", 1500)
        with pytest.raises(FetchError, match="413") as info:  # 3000 held: one more byte is too many
            await put("mr-out-2", 1)
        assert not info.value.retryable
        await put("mr-out-0", 1200)  # a retried reduce replaces its output: the old bytes come back
        await put("mr-out-2", 300)
        for name, token, status in [
            ("mr-out-3", TOKEN_A, 403),  # not an output of this job
            ("notes.txt", TOKEN_A, 403),
            ("mr-out-2", TOKEN_B, 403),  # another job's token
        ]:
            with pytest.raises(FetchError) as info:
                await put(name, 10, token)
            assert info.value.status == status
        with pytest.raises(FetchError, match="413"):  # over the cap of one upload, whatever the budget
            await put("mr-out-0", 2001)
        counters = server.counters
    assert _files(tmp_path) == ["mr-out-0", "mr-out-1", "mr-out-2"]
    assert counters["refused_over_budget"] == 1 and counters["refused_upload_too_large"] == 1


async def test_an_upload_past_the_budget_is_refused_before_its_body_is_read(tmp_path: Path) -> None:
    async with submitter(tmp_path, max_upload_bytes=10**13, upload_budget=10**6) as server:
        started = time.monotonic()
        status, answer = await _request(server.port, _put_head("mr-out-0", 10**12) + "x" * 1000)
        assert status == 413 and b"budget" in answer
        assert time.monotonic() - started < 2  # answered at once, not after a terabyte
        # a client cut off mid-body leaves no file and holds no budget
        _, writer = await asyncio.open_connection(LOOPBACK, server.port)
        writer.write(_put_head("mr-out-1", 900_000).encode() + b"y" * 400_000)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.transport.abort()
        await asyncio.sleep(0.2)
        await asyncio.to_thread(upload, server.url_for("mr-out-1"), b"z" * 10**6, token=TOKEN_A)
    assert _files(tmp_path) == ["mr-out-1"]


async def test_a_body_that_stalls_or_trickles_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataupload, "BODY_IDLE_S", 0.5)
    monkeypatch.setattr(dataupload, "BODY_GRACE_S", 0.3)
    monkeypatch.setattr(dataupload, "MIN_BODY_RATE", 1000)
    head = _put_head("mr-out-0", 1500)
    async with submitter(tmp_path) as server:
        started = time.monotonic()
        status, _ = await _request(server.port, head + "x" * 10)  # then nothing
        assert status == 408 and time.monotonic() - started < 2
        reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
        writer.write(head.encode())
        answer = asyncio.ensure_future(reader.read())
        started = time.monotonic()
        for _ in range(20):  # 100 bytes every 0.3 s: 333 bytes/s, under the 1000 required
            if answer.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(b"y" * 100)
            await asyncio.sleep(0.3)
        assert (await answer).startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 3
        writer.close()
        assert server.counters["slow_body"] == 2
        # the budget those two held is free again
        await asyncio.to_thread(upload, server.url_for("mr-out-0"), b"w" * 2000, token=TOKEN_A)
    assert _files(tmp_path) == ["mr-out-0"]


# -- connections -----------------------------------------------------------------------------------------

HALF_HEAD = b"GET /f/in/0 HTTP/1.1\r\nHost: data\r\nRange: bytes=0-"


async def _slowloris(
    port: int, sources: list[str], count: int, writers: list[asyncio.StreamWriter]
) -> list[asyncio.StreamReader]:
    """`count` connections from `sources` in turn, each sending half a request head, then nothing."""
    readers = []
    for i in range(count):
        source = sources[i % len(sources)]
        reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(source, 0))
        writer.write(HALF_HEAD)
        readers.append(reader)
        writers.append(writer)
    return readers


async def _closed(reader: asyncio.StreamReader) -> float:
    """When the server closed this connection (monotonic time)."""
    try:
        while await reader.read(4096):
            pass
    except ConnectionError:
        pass
    return time.monotonic()


@pytest.mark.parametrize("distributed", [False, True], ids=["one-peer", "many-peers"])
async def test_half_sent_heads_are_all_closed_and_a_client_is_still_served(
    tmp_path: Path, distributed: bool
) -> None:
    """500 connections that send half a head: from one address (the per-peer cap refuses all but 64),
    or from 20 (the total cap is reached, and the oldest waiting heads make room for newcomers). Every
    one is closed within the head timeout, and a real client fetching meanwhile gets its data."""
    data = tmp_path / "input"
    data.write_bytes(os.urandom(200_000))
    timeout = 1.5
    sources = [f"127.0.0.{10 + i}" for i in range(20)] if distributed else ["127.0.0.2"]
    async with submitter(tmp_path / "out", aliases={"in/0": data}, head_timeout=timeout) as server:
        started = time.monotonic()
        writers: list[asyncio.StreamWriter] = []
        try:
            readers = await _slowloris(server.port, sources, 500, writers)
            closing = [asyncio.ensure_future(_closed(r)) for r in readers]
            # meanwhile, a legitimate client (from another address) is served, more than once
            for _ in range(3):
                got = await asyncio.to_thread(fetch, server.url_for("in/0"), token=TOKEN_A, retries=0)
                assert got == data.read_bytes()
            async with asyncio.timeout(timeout + 5):
                closed_at = await asyncio.gather(*closing)
        finally:
            for writer in writers:
                writer.transport.abort()
        assert max(closed_at) - started < timeout + 1.5
        assert server.connections == 0
        counters = server.counters
    if distributed:
        assert counters["dropped_awaiting_head"] >= 500 - 256
        assert counters.get("refused_peer_full", 0) == 0
    else:
        assert counters["refused_peer_full"] == 500 - server.max_connections_per_peer
    assert counters["head_timeout"] >= 1
