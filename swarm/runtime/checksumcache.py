"""The checksums a data server sends with the files it serves, each hashed once per file version.

A GET answers with the CRC-32 of the bytes it sends. Hashing a large file costs far more than sending
it, and a map output is fetched by every reducer, so checksums are kept by (device, inode, size, mtime,
range): a file served twice is hashed once, and requests for a range being hashed wait for that one
hash. A file a PUT just stored is known without hashing, from the bytes received. Hashing runs on the
server's threads, from a descriptor of its own, so it never blocks the loop and may outlive a request
whose client left.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Awaitable, Callable
from typing import Any

from swarm.runtime.datafetch import checksum_fileobj

__all__ = ["CHECKSUM_CACHE_SIZE", "ChecksumCache"]

#: Checksums kept (the most recently used).
CHECKSUM_CACHE_SIZE = 4096

_Key = tuple[int, int, int, int, int, int]
_Blocking = Callable[..., Awaitable[Any]]


class ChecksumCache:
    """Checksums of file ranges by file version; `blocking` runs the hashing on the server's threads."""

    def __init__(self, blocking: _Blocking) -> None:
        self._blocking = blocking
        self._sums: collections.OrderedDict[_Key, str] = collections.OrderedDict()
        self._hashing: dict[_Key, asyncio.Future[str]] = {}

    async def checksum(self, fd: int, info: os.stat_result, start: int, length: int) -> str:
        """The checksum of `length` bytes from `start` of the open file `fd`, whose status is `info`."""
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, start, length)
        digest = self._sums.get(key)
        if digest is not None:
            self._sums.move_to_end(key)
            return digest
        pending = self._hashing.get(key)
        if pending is None:
            # The hashing thread gets its own descriptor: it may outlive this request if the client leaves.
            pending = asyncio.ensure_future(self._blocking(_hash_fd, os.dup(fd), start, length))
            self._hashing[key] = pending
            pending.add_done_callback(lambda done: self._hashed(key, done))
        return await asyncio.shield(pending)

    def remember_file(self, info: os.stat_result, digest: str) -> None:
        """Record `digest` as the checksum of the whole file whose status is `info`."""
        self._remember((info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, 0, info.st_size), digest)

    def _hashed(self, key: _Key, done: asyncio.Future[str]) -> None:
        self._hashing.pop(key, None)
        if not done.cancelled() and done.exception() is None:
            self._remember(key, done.result())

    def _remember(self, key: _Key, digest: str) -> None:
        self._sums[key] = digest
        self._sums.move_to_end(key)
        while len(self._sums) > CHECKSUM_CACHE_SIZE:
            self._sums.popitem(last=False)


def _hash_fd(fd: int, start: int, length: int) -> str:
    with os.fdopen(fd, "rb") as file:
        return checksum_fileobj(file, start, length)
