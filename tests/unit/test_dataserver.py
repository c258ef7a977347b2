"""The data plane: the asyncio data server and the blocking fetch/upload client, over loopback only.

The client functions block (they run in task worker processes), so the tests call them through
`asyncio.to_thread` while the server runs on the test's event loop. Misbehaving peers are tiny asyncio
servers written here, because the point is what the client does when a peer lies or breaks.

The servers here belong to one job (as a submitter's does) and the clients present its token;
`test_dataserver_security` tests who else gets in (nobody) and what a peer can hold.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import os
import random
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from swarm.errors import RemoteError
from swarm.runtime import datafetch
from swarm.runtime.datafetch import (
    CHECKSUM_HEADER,
    CHECKSUM_MISMATCH_REASON,
    WANT_CHECKSUM_HEADER,
    FetchError,
    checksum_bytes,
    checksum_file,
)
from swarm.runtime.dataserver import DataServer

LOOPBACK = "127.0.0.1"
MB = 1 << 20
JOB = "job-0123abcd"
TOKEN = "dGhlIGpvYidzIGNhcGFiaWxpdHk"
# The client calls as task code makes them, with the job's token.
fetch = functools.partial(datafetch.fetch, token=TOKEN)
upload = functools.partial(datafetch.upload, token=TOKEN)
delete = functools.partial(datafetch.delete, token=TOKEN)


def serve(root: Path, **options: object) -> DataServer:
    """A data server of job `JOB` (as a submitter's is), accepting `TOKEN`."""
    return DataServer(root, LOOPBACK, job=JOB, capabilities={JOB: TOKEN}, **options)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datafetch, "BACKOFF_BASE_S", 0.001)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "served"
    served.mkdir()
    return served


@pytest.fixture
async def server(root: Path) -> AsyncIterator[DataServer]:
    async with serve(root, allow_upload=True, allow_delete=True) as running:
        yield running


def _raw(
    url: str,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    token: str | None = TOKEN,
) -> tuple[int, str, dict[str, str], bytes]:
    """One request with the target sent exactly as given (no quoting), for tests that attack the parser."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    auth = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        conn.request(method, target, body=body, headers=auth | (headers or {}))
        response = conn.getresponse()
        return response.status, response.reason, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# -- GET ----------------------------------------------------------------------------------------------


async def test_get_round_trip_to_memory_and_to_file(server: DataServer, root: Path, tmp_path: Path) -> None:
    data = os.urandom(3 * MB + 17)  # several chunks, so the threaded hash pipeline is used
    (root / "job" / "in").mkdir(parents=True)
    (root / "job" / "in" / "part_1.bin").write_bytes(data)
    url = server.url_for("job/in/part_1.bin")
    assert url == f"http://{LOOPBACK}:{server.port}/f/job/in/part_1.bin"

    assert await asyncio.to_thread(fetch, url) == data
    dest = tmp_path / "copies" / "part1.bin"
    assert await asyncio.to_thread(fetch, url, dest, expected_checksum=checksum_bytes(data)) == dest
    assert dest.read_bytes() == data
    assert _files(dest.parent) == ["part1.bin"]  # no temp file left beside it

    # percent-encoded names are decoded before they are checked
    status, _, headers, body = await asyncio.to_thread(_raw, server.url, "GET", "/f/job/in/part%5F1.bin")
    assert (status, body) == (200, data)
    assert (
        headers[CHECKSUM_HEADER] == checksum_file(root / "job" / "in" / "part_1.bin") == checksum_bytes(data)
    )


async def test_small_and_empty_files(server: DataServer, root: Path) -> None:
    (root / "empty").write_bytes(b"")
    (root / "tiny").write_bytes(b"x")
    assert await asyncio.to_thread(fetch, server.url_for("empty")) == b""
    assert await asyncio.to_thread(fetch, server.url_for("tiny")) == b"x"


async def test_range_get_serves_input_splits(server: DataServer, root: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    (root / "input.txt").write_bytes(data)
    url = server.url_for("input.txt")

    # byte_range is (first, last), both inclusive, as in HTTP
    for first, last in [(0, 0), (0, 99), (100, 199), (5000, 899_999), (len(data) - 1, len(data) - 1)]:
        got = await asyncio.to_thread(fetch, url, byte_range=(first, last))
        assert got == data[first : last + 1], (first, last)
    # a split carrying its own checksum is checked against it
    split = data[1000:2000]
    got = await asyncio.to_thread(
        fetch, url, byte_range=(1000, 1999), expected_checksum=checksum_bytes(split)
    )
    assert got == split
    # past the end: the bytes up to the end, as HTTP clamps
    assert await asyncio.to_thread(fetch, url, byte_range=(len(data) - 10, len(data) + 500)) == data[-10:]
    with pytest.raises(ValueError):
        fetch(url, byte_range=(7, 6))

    status, _, headers, body = await asyncio.to_thread(
        _raw, server.url, "GET", "/f/input.txt", headers={"Range": "bytes=10-19"}
    )
    assert (status, body) == (206, data[10:20])
    assert headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert headers[CHECKSUM_HEADER] == checksum_bytes(data[10:20])
    status, _, _, body = await asyncio.to_thread(
        _raw, server.url, "GET", "/f/input.txt", headers={"Range": "bytes=-5"}
    )
    assert (status, body) == (206, data[-5:])

    with pytest.raises(FetchError) as info:
        await asyncio.to_thread(fetch, url, byte_range=(len(data), len(data)))
    assert info.value.status == 416
    for bad in ("bytes=0-1,5-6", "lines=1-2", "bytes=9-3", "bytes=-"):
        status, *_ = await asyncio.to_thread(_raw, server.url, "GET", "/f/input.txt", headers={"Range": bad})
        assert status == 400, bad


async def test_missing_file_fails_at_once_without_retrying(server: DataServer, root: Path) -> None:
    (root / "adir").mkdir()
    started = time.monotonic()
    for name in ("nope", "adir", "adir/nope/deeper"):
        with pytest.raises(FetchError) as info:
            await asyncio.to_thread(fetch, server.url_for(name), retries=5)
        assert info.value.status == 404
        assert not info.value.retryable
        assert "after 1 attempt" in str(info.value)
    assert time.monotonic() - started < 2
    assert isinstance(info.value, RemoteError)


async def test_checksum_is_recomputed_when_the_file_changes(server: DataServer, root: Path) -> None:
    path = root / "output"
    path.write_bytes(b"a" * 1000)
    assert await asyncio.to_thread(fetch, server.url_for("output")) == b"a" * 1000
    with open(path, "r+b") as f:  # same inode, same size, new bytes: only the mtime tells
        f.write(b"b" * 1000)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert await asyncio.to_thread(fetch, server.url_for("output")) == b"b" * 1000


async def test_expected_checksum_mismatch_is_retried_then_raised(server: DataServer, root: Path) -> None:
    (root / "f").write_bytes(b"payload")
    with pytest.raises(FetchError, match="checksum mismatch") as info:
        await asyncio.to_thread(fetch, server.url_for("f"), expected_checksum="0" * 32, retries=2)
    assert "after 3 attempts" in str(info.value)


async def test_unreachable_peer_raises_fetch_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError, match="after 2 attempts") as info:
        await asyncio.to_thread(fetch, f"http://{LOOPBACK}:{port}/f/x", tmp_path / "x", retries=1)
    assert info.value.status is None
    assert not (tmp_path / "x").exists()
    with pytest.raises(FetchError, match="not an http"):
        fetch("ftp://example/f/x")


async def test_a_local_disk_fault_is_an_os_error_not_a_fetch_error(
    server: DataServer, root: Path, tmp_path: Path
) -> None:
    (root / "f").write_bytes(b"data")
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(OSError) as info:  # dest's parent is a file: our fault, raised at once
        await asyncio.to_thread(fetch, server.url_for("f"), tmp_path / "a-file" / "dest")
    assert not isinstance(info.value, FetchError)
    with pytest.raises(FileNotFoundError):
        await asyncio.to_thread(upload, server.url_for("g"), tmp_path / "missing")


async def test_concurrent_fetches_beyond_the_transfer_limit(root: Path) -> None:
    blobs = {f"b{i}": os.urandom(MB + i) for i in range(6)}
    for name, blob in blobs.items():
        (root / name).write_bytes(blob)
    async with serve(root, fetch_limit=2) as limited:
        got = await asyncio.gather(*(asyncio.to_thread(fetch, limited.url_for(n)) for n in blobs))
    assert got == list(blobs.values())


# -- PUT ----------------------------------------------------------------------------------------------


async def test_put_then_get(server: DataServer, root: Path, tmp_path: Path) -> None:
    data = os.urandom(2 * MB + 3)
    digest = await asyncio.to_thread(upload, server.url_for("job1/mr-out-0"), data)
    assert digest == checksum_bytes(data)
    assert (root / "job1" / "mr-out-0").read_bytes() == data
    assert await asyncio.to_thread(fetch, server.url_for("job1/mr-out-0")) == data

    source = tmp_path / "local.bin"
    source.write_bytes(os.urandom(5 * MB))
    digest = await asyncio.to_thread(upload, server.url_for("job1/mr-out-0"), source)  # replaces it
    assert digest == checksum_file(source)
    assert await asyncio.to_thread(fetch, server.url_for("job1/mr-out-0")) == source.read_bytes()
    await asyncio.to_thread(upload, server.url_for("job1/empty"), b"")
    assert (root / "job1" / "empty").read_bytes() == b""
    assert _files(root) == ["job1", "job1/empty", "job1/mr-out-0"]


async def test_a_put_body_sent_with_its_head_and_then_in_pieces_is_stored_whole(
    server: DataServer, root: Path
) -> None:
    """Part of the body arrives with the head (the stream has it), the rest in pieces (received on a
    thread, straight from the socket)."""
    data = os.urandom(3 * MB + 5)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"PUT /f/job1/mr-out-0 HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    writer.write(head + data[:1000])
    for at in range(1000, len(data), 700_001):
        await asyncio.sleep(0.01)
        writer.write(data[at : at + 700_001])
    status = await reader.readuntil(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 201 ") and checksum_bytes(data).encode() in status
    assert (root / "job1" / "mr-out-0").read_bytes() == data
    writer.close()
    assert await asyncio.to_thread(fetch, server.url_for("job1/mr-out-0")) == data


async def test_put_with_wrong_checksum_is_rejected_and_nothing_is_kept(
    server: DataServer, root: Path
) -> None:
    (root / "kept").write_bytes(b"old")
    for target in ("/f/kept", "/f/new/dir/file"):
        status, reason, _, body = await asyncio.to_thread(
            _raw, server.url, "PUT", target, b"new bytes", {CHECKSUM_HEADER: checksum_bytes(b"other bytes")}
        )
        assert (status, reason) == (400, CHECKSUM_MISMATCH_REASON), body
    assert _files(root) == ["kept"]
    assert (root / "kept").read_bytes() == b"old"
    status, *_ = await asyncio.to_thread(_raw, server.url, "PUT", "/f/kept", b"x", {CHECKSUM_HEADER: "zz"})
    assert status == 400


async def test_upload_retries_a_put_damaged_in_transit(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_send = datafetch._send
    calls = 0

    def flaky_send(conn: http.client.HTTPConnection, source: Path | list[memoryview], size: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # the first attempt's bytes get mangled on the way
            assert isinstance(source, list)
            first = source[0]
            source = [memoryview(bytes([first[0] ^ 1]) + first[1:]), *source[1:]]
        real_send(conn, source, size)

    monkeypatch.setattr(datafetch, "_send", flaky_send)
    async with serve(root, allow_upload=True) as running:
        await asyncio.to_thread(upload, running.url_for("out"), [b"prec", memoryview(b"ious")])
    assert calls == 2
    assert _files(root) == ["out"]
    assert (root / "out").read_bytes() == b"precious"


async def test_a_reader_never_sees_a_partial_upload(server: DataServer, root: Path) -> None:
    data = os.urandom(MB)
    reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
    head = (
        f"PUT /f/out/r0 HTTP/1.1\r\nContent-Length: {len(data)}\r\n{CHECKSUM_HEADER}: {checksum_bytes(data)}"
        f"\r\nAuthorization: Bearer {TOKEN}"
    )
    writer.write(head.encode() + b"\r\n\r\n" + data[: len(data) // 2])
    await writer.drain()
    await asyncio.sleep(0.05)
    with pytest.raises(FetchError) as info:  # half received: the name does not exist yet
        await asyncio.to_thread(fetch, server.url_for("out/r0"))
    assert info.value.status == 404
    writer.write(data[len(data) // 2 :])
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 201 ")
    assert await asyncio.to_thread(fetch, server.url_for("out/r0")) == data


async def test_an_upload_cut_off_by_its_client_or_by_the_server_leaves_nothing(root: Path) -> None:
    """The receiving thread discards the temp file when the client goes away mid-body, and when the
    server closes with the body half received (the thread sees the cancel within half a second)."""
    data = os.urandom(2 * MB)
    head = f"PUT /f/out/r0 HTTP/1.1\r\nContent-Length: {len(data)}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    async with serve(root, allow_upload=True) as running:
        _, writer = await asyncio.open_connection(LOOPBACK, running.port)
        writer.write(head.encode() + data[: MB // 2])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()  # the client is gone
        await asyncio.sleep(0.3)
        assert _files(root) == []
        _, writer = await asyncio.open_connection(LOOPBACK, running.port)
        writer.write(head.encode() + data[: MB // 2])
        await writer.drain()
        await asyncio.sleep(0.1)
    # the server closed with that body half received
    await asyncio.sleep(1.0)
    writer.close()
    assert _files(root) == []


async def test_uploads_are_refused_when_disabled_or_too_large(root: Path) -> None:
    async with serve(root) as readonly:
        with pytest.raises(FetchError, match="403") as info:
            await asyncio.to_thread(upload, readonly.url_for("x"), b"data")
        assert not info.value.retryable
    async with serve(root, allow_upload=True, max_upload_bytes=1000) as capped:
        await asyncio.to_thread(upload, capped.url_for("small"), b"s" * 1000)
        with pytest.raises(FetchError, match="413") as info:  # the client hears why, not a reset
            await asyncio.to_thread(upload, capped.url_for("big"), os.urandom(2 * MB))
        assert info.value.status == 413
    assert _files(root) == ["small"]


# -- DELETE -------------------------------------------------------------------------------------------


async def test_delete_removes_a_job_tree(server: DataServer, root: Path, tmp_path: Path) -> None:
    (root / "job7" / "map" / "3").mkdir(parents=True)
    (root / "job7" / "map" / "3" / "part-0").write_bytes(b"x")
    (root / "job8").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"keep")
    (root / "link").symlink_to(outside)

    assert await asyncio.to_thread(delete, server.url_for("job7")) is True
    assert await asyncio.to_thread(delete, server.url_for("job7")) is False
    assert await asyncio.to_thread(delete, server.url_for("link")) is True  # the link, not its target
    assert (outside / "precious").read_bytes() == b"keep"
    assert _files(root) == ["job8"]
    for target in ("/f/", "/f/..", "/f/link/precious", "/f/%2e%2e/outside"):
        status, *_ = await asyncio.to_thread(_raw, server.url, "DELETE", target)
        assert status in (400, 403, 404), target
    assert (outside / "precious").exists()
    async with serve(root) as readonly:
        with pytest.raises(FetchError, match="403"):
            await asyncio.to_thread(delete, readonly.url_for("job8"))
    assert (root / "job8").is_dir()


# -- hostile input ------------------------------------------------------------------------------------


async def test_path_traversal_is_refused(server: DataServer, root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"top secret")
    (root / "escape").symlink_to(tmp_path)
    (root / "escape-file").symlink_to(secret)
    (root / "sub").mkdir()
    (root / "sub" / "ok").write_bytes(b"ok")
    (root / "inner").symlink_to(root / "sub")  # no link is followed, even one that stays inside

    attacks = {
        "/f/../secret": 400,
        "/f/sub/../../secret": 400,
        "/f/%2e%2e/secret": 400,
        "/f/sub/%2E%2E/%2E%2E/secret": 400,
        "/f//etc/passwd": 400,
        "/f/%2Fetc%2Fpasswd": 400,
        "/f/sub/./ok": 400,
        "/f/sub%00/ok": 400,
        "/f/..%5csecret": 400,
        "/f/%ff%fe": 400,
        "/f/escape/secret": 403,
        "/f/escape-file": 403,
        "/etc/passwd": 404,
        "/": 404,
    }
    for target, expected in attacks.items():
        for method in ("GET", "PUT"):
            status, _, _, body = await asyncio.to_thread(_raw, server.url, method, target, b"x")
            assert status == expected, (method, target, body)
            assert b"top secret" not in body
    assert secret.read_bytes() == b"top secret"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret", "served"]
    status, _, _, _ = await asyncio.to_thread(_raw, server.url, "GET", "/f/inner/ok", b"")
    assert status == 403
    assert await asyncio.to_thread(fetch, server.url_for("sub/ok")) == b"ok"


async def test_aliases_publish_outside_files_read_only(root: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "book.txt").write_bytes(b"it was the best of times")
    (inputs / "other.txt").write_bytes(b"not published")
    async with serve(
        root, allow_upload=True, allow_delete=True, aliases={"in/0": inputs / "book.txt"}
    ) as server:
        assert await asyncio.to_thread(fetch, server.url_for("in/0")) == b"it was the best of times"
        assert await asyncio.to_thread(fetch, server.url_for("in/0"), byte_range=(7, 9)) == b"the"
        for method, target, expected in [
            ("PUT", "/f/in/0", 403),
            ("DELETE", "/f/in/0", 403),
            ("GET", "/f/in/1", 404),
            ("GET", "/f/in/0/../other.txt", 400),
            ("GET", "/f/in/../../inputs/other.txt", 400),
        ]:
            status, *_ = await asyncio.to_thread(_raw, server.url, method, target, b"x")
            assert status == expected, (method, target)
    assert (inputs / "book.txt").read_bytes() == b"it was the best of times"
    with pytest.raises(ValueError, match="alias"):
        DataServer(root, aliases={"../x": inputs / "book.txt"})


async def _exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(payload)
    await writer.drain()
    try:
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def test_server_survives_garbage(server: DataServer, root: Path) -> None:
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    (root / "f").write_bytes(b"still here")
    rng = random.Random(7)
    for _ in range(20):
        junk = rng.randbytes(rng.randrange(1, 3000))
        _reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
        writer.write(junk)
        await writer.drain()
        writer.close()  # hang up mid-"request"
    for junk in (rng.randbytes(500) + b"\r\n\r\n", b"\r\n\r\n", b"GET\r\n\r\n", b"GET /f/f HTTP/9\r\n\r\n"):
        assert (await _exchange(server.port, junk)).startswith(b"HTTP/1.1 400 ")
    assert (await _exchange(server.port, b"GET /f/f HTTP/1.1\r\nX: " + b"a" * 70_000)).startswith(
        b"HTTP/1.1 431 "
    )
    bad_length = b"PUT /f/g HTTP/1.1\r\n" + auth + b"Content-Length: -5\r\n\r\n"
    assert (await _exchange(server.port, bad_length)).startswith(b"HTTP/1.1 400 ")
    chunked = b"PUT /f/g HTTP/1.1\r\n" + auth + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert (await _exchange(server.port, chunked)).startswith(b"HTTP/1.1 501 ")
    assert (await _exchange(server.port, b"PATCH /f/f HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
    assert await asyncio.to_thread(fetch, server.url_for("f")) == b"still here"
    assert _files(root) == ["f"]


# -- misbehaving peers --------------------------------------------------------------------------------

Behaviour = Callable[[int, asyncio.StreamWriter], Awaitable[None]]


async def _serve_badly(behaviour: Behaviour) -> tuple[asyncio.Server, str, list[int]]:
    """A peer that reads a request head, then answers as `behaviour(attempt, writer)` says."""
    attempts: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(len(attempts))
        try:
            await reader.readuntil(b"\r\n\r\n")
            await behaviour(attempts[-1], writer)
            await writer.drain()
        finally:
            writer.close()

    bad = await asyncio.start_server(handle, LOOPBACK, 0)
    return bad, f"http://{LOOPBACK}:{bad.sockets[0].getsockname()[1]}/f/data", attempts


DATA = os.urandom(3 * MB)


def _head(length: int, checksum: str = checksum_bytes(DATA)) -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n{CHECKSUM_HEADER}: {checksum}\r\n\r\n".encode()


async def _truncated(attempt: int, writer: asyncio.StreamWriter) -> None:
    writer.write(_head(len(DATA)) + DATA[: len(DATA) // 2])


async def _corrupt(attempt: int, writer: asyncio.StreamWriter) -> None:
    writer.write(_head(len(DATA)) + DATA[:1000] + bytes([DATA[1000] ^ 0x40]) + DATA[1001:])


async def _no_checksum(attempt: int, writer: asyncio.StreamWriter) -> None:
    writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(DATA)}\r\n\r\n".encode() + DATA)


async def _overloaded(attempt: int, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")


async def _garbled(attempt: int, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x00\x01garbage\r\n\r\n")


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        (_truncated, "truncated"),
        (_corrupt, "checksum mismatch"),
        (_overloaded, "503"),
        (_garbled, "BadStatusLine"),
    ],
)
@pytest.mark.parametrize("to_file", [False, True])
async def test_a_lying_peer_is_retried_then_refused(
    behaviour: Behaviour, message: str, to_file: bool, tmp_path: Path
) -> None:
    bad, url, attempts = await _serve_badly(behaviour)
    dest = tmp_path / "dest" / "data" if to_file else None
    async with bad:
        with pytest.raises(FetchError, match=message) as info:
            await asyncio.to_thread(fetch, url, dest, retries=2)
    assert len(attempts) == 3
    assert "after 3 attempts" in str(info.value)
    if dest is not None:
        assert _files(dest.parent) == []  # neither the file nor a temp file


async def test_an_unverifiable_answer_is_refused(tmp_path: Path) -> None:
    bad, url, attempts = await _serve_badly(_no_checksum)
    async with bad:
        with pytest.raises(FetchError, match="no X-Checksum"):
            await asyncio.to_thread(fetch, url, retries=2)
        assert len(attempts) == 1  # retrying cannot help
        assert await asyncio.to_thread(fetch, url, expected_checksum=checksum_bytes(DATA)) == DATA


async def test_a_flaky_peer_is_retried_until_the_data_is_whole(tmp_path: Path) -> None:
    async def flaky(attempt: int, writer: asyncio.StreamWriter) -> None:
        await (_truncated, _corrupt, _no_problem)[min(attempt, 2)](attempt, writer)

    async def _no_problem(attempt: int, writer: asyncio.StreamWriter) -> None:
        writer.write(_head(len(DATA)) + DATA)

    bad, url, attempts = await _serve_badly(flaky)
    async with bad:
        dest = await asyncio.to_thread(fetch, url, tmp_path / "d", retries=3)
    assert dest.read_bytes() == DATA
    assert len(attempts) == 3
    assert _files(tmp_path) == ["d"]


async def test_a_split_read_without_verify_checks_its_length_only(server: DataServer, root: Path) -> None:
    data = os.urandom(3 * MB)
    (root / "split").write_bytes(data)
    got = await asyncio.to_thread(fetch, server.url_for("split"), byte_range=(10, 2 * MB), verify=False)
    assert got == data[10 : 2 * MB + 1]
    # asked not to, the server sends no checksum (and so never hashed the range)
    status, _, headers, body = await asyncio.to_thread(
        _raw, server.url, "GET", "/f/split", headers={"Range": "bytes=0-99", WANT_CHECKSUM_HEADER: "no"}
    )
    assert (status, body, CHECKSUM_HEADER in headers) == (206, data[:100], False)
    bad, url, attempts = await _serve_badly(_truncated)
    async with bad:  # a body cut short is still refused, and retried
        with pytest.raises(FetchError, match="truncated"):
            await asyncio.to_thread(fetch, url, verify=False, retries=1)
    assert len(attempts) == 2
    bad, url, _ = await _serve_badly(_no_checksum)
    async with bad:
        assert await asyncio.to_thread(fetch, url, verify=False) == DATA


async def test_a_client_that_knows_the_checksum_spares_the_server_hashing(tmp_path: Path) -> None:
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        await _no_checksum(0, writer)
        await writer.drain()
        writer.close()

    peer = await asyncio.start_server(handle, LOOPBACK, 0)
    url = f"http://{LOOPBACK}:{peer.sockets[0].getsockname()[1]}/f/data"
    async with peer:
        assert await asyncio.to_thread(fetch, url, expected_checksum=checksum_bytes(DATA)) == DATA
        with pytest.raises(FetchError, match="checksum mismatch"):
            await asyncio.to_thread(fetch, url, expected_checksum=checksum_bytes(b"other"), retries=0)
    assert all(f"{WANT_CHECKSUM_HEADER}: no".encode() in head for head in heads)


# -- size and speed -----------------------------------------------------------------------------------


async def test_a_big_file_streams_in_bounded_memory(server: DataServer, root: Path, tmp_path: Path) -> None:
    size = 50 * MB
    with open(root / "big", "wb") as f:
        f.truncate(size)  # sparse: no disk cost to create
    was_tracing = tracemalloc.is_tracing()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    try:
        dest = await asyncio.to_thread(fetch, server.url_for("big"), tmp_path / "big")
        growth = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        if not was_tracing:
            tracemalloc.stop()
    assert dest.stat().st_size == size
    # server and client together: a few 1 MiB buffers, whatever the size of the file
    assert growth < 12 * MB, f"peak grew by {growth / MB:.1f} MB for a {size / MB:.0f} MB transfer"


async def test_loopback_throughput(server: DataServer, root: Path, tmp_path: Path) -> None:
    """Prints MB/s for a 200 MB fetch (run with -s to see it); asserts only that it is whole."""
    size = 200 * MB
    block = os.urandom(MB)
    with open(root / "big", "wb") as f:
        for _ in range(size // MB):
            f.write(block)
    url = server.url_for("big")
    started = time.perf_counter()
    await asyncio.to_thread(fetch, url, tmp_path / "cold")  # the server hashes the file first
    cold = time.perf_counter() - started
    started = time.perf_counter()
    dest = await asyncio.to_thread(fetch, url, tmp_path / "warm")  # the checksum is cached
    warm = time.perf_counter() - started
    assert checksum_file(dest) == checksum_file(root / "big")
    print(f"\nloopback fetch of 200 MB: {size / MB / cold:.0f} MB/s cold, {size / MB / warm:.0f} MB/s warm")


async def test_a_restarted_node_listens_on_its_old_port_or_any_free_one(root: Path) -> None:
    first = DataServer(root, host="127.0.0.1")
    await first.start()
    port = first.port
    await first.close()
    again = DataServer(root, host="127.0.0.1", port=port, any_port_if_taken=True)
    await again.start()
    try:
        assert again.port == port
        # While it holds the port, a second server falls back to a free one instead of failing.
        other = DataServer(root, host="127.0.0.1", port=port, any_port_if_taken=True)
        await other.start()
        assert other.port not in (0, port)
        await other.close()
        with pytest.raises(OSError):
            await DataServer(root, host="127.0.0.1", port=port).start()
    finally:
        await again.close()
