"""Sending a byte range of a file as a response body, by `sendfile(2)` where the connection allows.

uvloop, the loop a node runs on, has no `loop.sendfile`: its fallback reads each chunk on a thread and
writes it through the transport, two copies through user space of every byte a data server sends (the
submitter's input splits, the map runs of a shuffle). Here `sendfile(2)` runs on a thread instead, on a
duplicate of the connection's socket, once the transport's own buffer is empty: the bytes go from the
page cache to the socket in the kernel, and the loop's thread does none of the copying on either loop.
A TLS connection, or a platform without `os.sendfile`, gets reads and writes.
"""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

from swarm.runtime.httpwire import IO_TIMEOUT_S

__all__ = ["SEND_CHUNK", "send_file_range"]

#: Bytes per thread call or read: the unit of the stall timeout, and of the memory a read costs.
SEND_CHUNK = 8 << 20


async def send_file_range(
    writer: asyncio.StreamWriter,
    file: BinaryIO,
    start: int,
    length: int,
    blocking: Callable[..., Awaitable[Any]],
) -> None:
    """Send `length` bytes of `file` from `start` after what `writer` has queued, in chunks of at most
    `SEND_CHUNK`, each of which must go within `IO_TIMEOUT_S` (a stalled reader must not hold a transfer
    slot forever); `blocking` runs a call on the server's threads. Raises ConnectionError if the file is
    shorter than that, TimeoutError on a stall."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    plain = transport.get_extra_info("sslcontext") is None
    zero_copy = hasattr(os, "sendfile") and sock is not None and plain
    if zero_copy:
        await _flushed(writer)
    else:
        await writer.drain()
    offset, end = start, start + length
    while offset < end:
        size = min(SEND_CHUNK, end - offset)
        if zero_copy:
            # The thread owns duplicates: should this request be cancelled and the transport or the file
            # be closed meanwhile, the thread never touches whatever reuses their numbers.
            out, source = os.dup(sock.fileno()), os.dup(file.fileno())
            sent = await blocking(_sendfile, out, source, offset, size)
        else:
            async with asyncio.timeout(IO_TIMEOUT_S):
                block = await blocking(os.pread, file.fileno(), size, offset)
                writer.write(block)
                await writer.drain()
            sent = len(block)
        if sent == 0:  # the file shrank under us: close early, the client sees a short body and retries
            raise ConnectionError(f"file ended {end - offset} bytes early")
        offset += sent


async def _flushed(writer: asyncio.StreamWriter) -> None:
    """Wait until the transport has written everything queued (the response head), not merely until
    its buffer is below the low-water mark as `drain` does: the body goes around the transport."""
    transport = writer.transport
    if not transport.get_write_buffer_size():
        return
    low, high = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=0, low=0)
    try:
        await writer.drain()
    finally:
        transport.set_write_buffer_limits(high=high, low=low)


def _sendfile(out: int, source: int, offset: int, size: int) -> int:
    """On a thread: send up to `size` bytes of `source` from `offset` to the socket `out` (non-blocking,
    as the loop left it), waiting for room at most `IO_TIMEOUT_S` in all. Returns the bytes
    sent, fewer only at the end of the file. Closes both descriptors, which it owns."""
    deadline = time.monotonic() + IO_TIMEOUT_S
    sent = 0
    try:
        while sent < size:
            try:
                n = os.sendfile(out, source, offset + sent, size - sent)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not _writable(out, left):
                    raise TimeoutError(f"the reader took no bytes for {IO_TIMEOUT_S:g}s") from None
                continue
            if n == 0:
                break
            sent += n
        return sent
    finally:
        os.close(out)
        os.close(source)


def _writable(fd: int, seconds: float) -> bool:
    """Wait until `fd` can take bytes (or has failed: the next send says how), at most `seconds`."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return bool(poller.poll(seconds * 1000))
