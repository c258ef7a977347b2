"""The loop-served socket on real loopback connections, plain and TLS: order, backpressure, loss."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from swarm.runtime.loopsocket import WATCH_S, LoopSocket
from swarm.trust.tls import client_context, make_ca, make_server_cert

pytestmark = pytest.mark.network


class _Peer:
    """The server side: what it read, and a way to talk back or hang up."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self.reading = asyncio.Event()  # cleared: the server does not read (the client's writes pile up)
        self.reading.set()


@asynccontextmanager
async def _server(tls: bool, tmp: Path) -> AsyncIterator[tuple[int, _Peer, ssl.SSLContext | None]]:
    peer = _Peer()
    server_tls = client_tls = None
    if tls:
        ca_pem, ca_key = make_ca("test")
        cert_pem, key_pem = make_server_cert(ca_pem, ca_key)
        (tmp / "cert.pem").write_bytes(cert_pem)
        (tmp / "key.pem").write_bytes(key_pem)
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
        client_tls = client_context(ca_pem)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer.writer = writer
        peer.connected.set()
        while True:
            await peer.reading.wait()
            data = await reader.read(65536)
            if not data:
                break
            peer.received += data

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
    async with server:
        yield server.sockets[0].getsockname()[1], peer, client_tls


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_writes_the_socket_cannot_take_at_once_arrive_whole_and_in_order(
    tls: bool, tmp_path: Path
) -> None:
    async with _server(tls, tmp_path) as (port, peer, context):
        lost: list[str] = []
        sock = await LoopSocket.open("127.0.0.1", port, context, lambda _: None, lost.append)
        await peer.connected.wait()
        peer.reading.clear()  # the server stops reading: the client's buffers fill
        parts = [bytes([n]) * 700_000 for n in range(12)]
        for part in parts:
            sock.write(part)
        await asyncio.sleep(0.2)
        peer.reading.set()
        expected = b"".join(parts)
        async with asyncio.timeout(20):
            while len(peer.received) < len(expected):
                await asyncio.sleep(0.01)
        assert hashlib.sha256(peer.received).digest() == hashlib.sha256(expected).digest()
        sock.close("done")
        assert lost == ["done"]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_the_watchdog_reads_and_sees_the_end_when_the_loop_callbacks_are_gone(
    tls: bool, tmp_path: Path
) -> None:
    # What uvloop does when an error on the socket closes its poll handle: the reader registration ends
    # without a word. The watchdog must still deliver what arrives, and see the connection end.
    async with _server(tls, tmp_path) as (port, peer, context):
        got: list[bytes] = []
        lost: list[str] = []
        sock = await LoopSocket.open("127.0.0.1", port, context, got.append, lost.append)
        await peer.connected.wait()
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock._fd)
        assert peer.writer is not None
        peer.writer.write(b"still here")
        await peer.writer.drain()
        async with asyncio.timeout(4 * WATCH_S):
            while not got:
                await asyncio.sleep(0.05)
        assert b"".join(got) == b"still here"
        peer.writer.close()
        async with asyncio.timeout(4 * WATCH_S):
            while not lost:
                await asyncio.sleep(0.05)
        assert lost == ["the broker closed the connection"]


async def test_a_refused_connection_is_an_os_error(tmp_path: Path) -> None:
    async with _server(False, tmp_path) as (port, _, _):
        pass  # the port is free again
    with pytest.raises(OSError):
        await LoopSocket.open("127.0.0.1", port, None, lambda _: None, lambda _: None)


async def test_a_tls_read_that_must_write_first_goes_on_once_the_socket_takes_bytes(tmp_path: Path) -> None:
    # OpenSSL asks to write in the middle of a read when it must answer a TLS 1.3 key update while the
    # send buffer is full. The read must go on as soon as the socket takes bytes, not at the watchdog's
    # next look (or never, if nothing more arrives).
    async with _server(True, tmp_path) as (port, peer, context):
        got: list[bytes] = []
        sock = await LoopSocket.open("127.0.0.1", port, context, got.append, lambda _: None)
        await peer.connected.wait()
        real = sock._sock.recv
        held: list[bytes] = []
        calls = 0

        def recv(size: int) -> bytes:
            # The first read takes the bytes off the socket, as OpenSSL takes a record, then must write.
            nonlocal calls
            calls += 1
            if calls == 1:
                held.append(real(size))
                raise ssl.SSLWantWriteError()
            return held.pop() if held else real(size)

        sock._sock.recv = recv  # type: ignore[method-assign]
        assert peer.writer is not None
        peer.writer.write(b"after the key update")
        await peer.writer.drain()
        async with asyncio.timeout(WATCH_S / 2):
            while not got:
                await asyncio.sleep(0.01)
        assert b"".join(got) == b"after the key update" and calls >= 2
        sock.close("done")
