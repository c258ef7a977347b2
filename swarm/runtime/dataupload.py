"""Uploads to a data server: how much a job may store, and how a PUT's body becomes a file.

A PUT receives `Content-Length` bytes into a temp file beside its target, checks them against the
request's `X-Checksum` (400 "Checksum Mismatch" and nothing kept), fsyncs and renames into place: a
reader sees the old file or the whole new one, never a partial one. A refused or failed upload leaves
nothing behind, not even the directories it made.

Uploads are capped per request and per job (`UploadBudget`: a byte budget over all of a job's uploads,
refused with 413 before any body is read; a replaced file gives its bytes back). A body must keep
arriving at `MIN_BODY_RATE` after a short grace, else it is cut off with a 408: a client trickling bytes
would otherwise hold a transfer slot and a temp file as long as it liked. Apart from the server, which
only decides whether a PUT is allowed at all and where it goes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from swarm.checksum import Crc32
from swarm.durable import write_all
from swarm.runtime.datafetch import CHECKSUM_HEADER, CHECKSUM_MISMATCH_REASON, new_hasher
from swarm.runtime.httpwire import WRITE_BATCH, HttpError, Request

__all__ = [
    "BODY_GRACE_S",
    "BODY_IDLE_S",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_UPLOAD_BUDGET",
    "MIN_BODY_RATE",
    "UploadBudget",
    "claimed_checksum",
    "make_parents",
    "remove_made",
    "store",
]

#: A request body must keep arriving at this rate on average, after `BODY_GRACE_S`, and never stall
#: for `BODY_IDLE_S`: a slow device on a poor link still sends far faster.
MIN_BODY_RATE = 64 * 1024
BODY_GRACE_S = 10.0
BODY_IDLE_S = 20.0
DEFAULT_MAX_UPLOAD_BYTES = 1 << 30
DEFAULT_UPLOAD_BUDGET = 1 << 30

_CHECKSUM = re.compile(r"[0-9a-f]{8}")
_Blocking = Callable[..., Awaitable[Any]]


class UploadBudget:
    """The bytes one server's uploads may hold: at most `max_upload_bytes` per upload, and at most
    `budget` per job over all its uploads. Refusals are counted in `counters`."""

    def __init__(self, max_upload_bytes: int, budget: int, counters: collections.Counter[str]) -> None:
        self.max_upload_bytes = max_upload_bytes
        self.budget = budget
        self._counters = counters
        self._used: collections.Counter[str] = collections.Counter()  # job -> bytes held or coming
        self._stored: dict[str, tuple[str, int]] = {}  # relpath -> (job, size) of what uploads left

    def check(self, job: str, relpath: str, length: int) -> None:
        """Refuse (413) an upload of `length` bytes to `relpath` that the limits leave no room for."""
        if length > self.max_upload_bytes:
            self._counters["refused_upload_too_large"] += 1
            raise HttpError(413, f"{length} bytes is over the limit of {self.max_upload_bytes} per upload")
        replacing = self._stored.get(relpath, (job, 0))[1]  # a file this upload replaces gives its bytes back
        if self._used[job] - replacing + length > self.budget:
            self._counters["refused_over_budget"] += 1
            raise HttpError(
                413,
                f"{length} more bytes would take job {job}'s uploads past its budget of {self.budget}",
            )

    def hold(self, job: str, length: int) -> None:
        """Count an upload's bytes against its job from now on, so concurrent uploads cannot overrun the
        budget together."""
        self._used[job] += length

    def release(self, job: str, length: int) -> None:
        """Give back what `hold` took for an upload that stored nothing."""
        self._used[job] -= length

    def stored(self, job: str, relpath: str, length: int) -> None:
        """Record that an upload now holds `relpath`; the file it replaced is gone and counts no more."""
        replaced = self._stored.pop(relpath, None)
        if replaced is not None:
            self._used[replaced[0]] -= replaced[1]
        self._stored[relpath] = (job, length)


def claimed_checksum(request: Request) -> str | None:
    """The checksum the request says its body has, if it says one; a 400 if it is malformed."""
    claimed = request.headers.get(CHECKSUM_HEADER.lower())
    if claimed is None:
        return None
    claimed = claimed.strip().lower()
    if not _CHECKSUM.fullmatch(claimed):
        raise HttpError(400, f"{CHECKSUM_HEADER} is not 8 hex digits")
    return claimed


def make_parents(path: Path, root: Path) -> list[Path]:
    """Make the directories `path` needs; return those made below `root`, deepest first (a 409 if a
    file stands in the way)."""
    created = [d for d in (path.parent, *path.parent.parents) if d.is_relative_to(root)]
    created = [d for d in created if d != root and not d.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise HttpError(409, "a file stands where a directory is needed") from None
    return created


def remove_made(created: list[Path]) -> None:
    """Remove the directories `make_parents` made, where they are still empty."""
    for directory in created:
        with contextlib.suppress(OSError):
            directory.rmdir()


async def store(
    request: Request,
    reader: asyncio.StreamReader,
    path: Path,
    claimed: str | None,
    blocking: _Blocking,
    counters: collections.Counter[str],
) -> tuple[os.stat_result, str]:
    """Receive the body into a temp file beside `path`, verify, fsync, rename into place; return the
    stored file's status and checksum. `blocking` runs file work on the server's threads."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".upload", dir=path.parent)
    temp = Path(temp_name)
    try:
        digest = await _receive(reader, fd, request, blocking, counters)
        if claimed is not None and digest != claimed:
            raise HttpError(
                400, f"received bytes hash to {digest}, not {claimed}", reason=CHECKSUM_MISMATCH_REASON
            )
        owned, fd = fd, -1  # the thread closes it, even if this request is cancelled meanwhile
        info = await blocking(_sync_and_close, owned)
        os.replace(temp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    return info, digest


async def _receive(
    reader: asyncio.StreamReader,
    fd: int,
    request: Request,
    blocking: _Blocking,
    counters: collections.Counter[str],
) -> str:
    """Read the request body into `fd`; return its checksum.

    The loop only receives: each ~1 MiB batch is checksummed and written by a thread (zlib and the
    write release the GIL) while the loop receives the next one, so the two overlap. A body that stalls
    for `BODY_IDLE_S` or falls behind `MIN_BODY_RATE` (after `BODY_GRACE_S`) is cut off with a 408: a
    client trickling bytes would otherwise hold a transfer slot and a temp file as long as it liked.
    """
    hasher = new_hasher()
    batch: list[bytes] = []
    batched = 0
    loop = asyncio.get_running_loop()
    started = loop.time() + BODY_GRACE_S
    received = 0
    while request.body_left > 0:
        try:
            async with asyncio.timeout(BODY_IDLE_S):
                block = await reader.read(min(request.body_left, WRITE_BATCH))
        except TimeoutError:
            counters["slow_body"] += 1
            request.body_left = 0  # no lingering over a body that does not come
            raise HttpError(408, f"no body bytes for {BODY_IDLE_S:g}s") from None
        if not block:
            raise ConnectionError(f"client closed with {request.body_left} body bytes unsent")
        request.body_left -= len(block)
        received += len(block)
        if loop.time() > started + received / MIN_BODY_RATE:
            counters["slow_body"] += 1
            request.body_left = 0
            raise HttpError(408, f"body arriving slower than {MIN_BODY_RATE} bytes/s")
        batch.append(block)
        batched += len(block)
        if batched >= WRITE_BATCH or request.body_left == 0:
            await blocking(_hash_and_write, os.dup(fd), batch, hasher)
            batch, batched = [], 0
    return hasher.hexdigest()


def _hash_and_write(fd: int, blocks: list[bytes], hasher: Crc32) -> None:
    """Checksum `blocks` into `hasher` and write them to `fd`, then close it: `fd` is a duplicate owned
    by this thread, so if the request is cancelled meanwhile and closes its descriptor, this one stays
    valid and a write can never land in a file that reused the number."""
    try:
        for block in blocks:
            hasher.update(block)
            write_all(fd, memoryview(block))
    finally:
        os.close(fd)


def _sync_and_close(fd: int) -> os.stat_result:
    try:
        os.fsync(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)
