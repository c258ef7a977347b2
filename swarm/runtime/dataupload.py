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
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from swarm.durable import AtomicFile
from swarm.runtime.datafetch import CHECKSUM_HEADER, CHECKSUM_MISMATCH_REASON
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

#: How often a receiving thread looks whether its request was cancelled.
_POLL_S = 0.5

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
    transport: asyncio.BaseTransport,
    path: Path,
    claimed: str | None,
    blocking: _Blocking,
    counters: collections.Counter[str],
) -> tuple[os.stat_result, str]:
    """Receive the body into an `AtomicFile` beside `path`, verify it against `claimed`, and commit it
    (fsync, rename into place, fsync of the directory); return the stored file's status and checksum.

    An upload is a job's output, written once and not read back here, so the file bypasses the page
    cache where the file system allows (see `AtomicFile`). The bytes that came with the head are in the
    stream's buffer; the rest is received on one of the server's threads (`blocking`), straight from a
    duplicate of the socket into one buffer, and written from there, while the transport does not read:
    a stream would copy every byte three more times and run the loop once per arriving chunk (receiving
    1 GB: 1.4 CPU-s through the stream, 0.8 this way). A body that stalls for `BODY_IDLE_S` or falls
    behind `MIN_BODY_RATE` (after `BODY_GRACE_S`) is cut off with a 408: a client trickling bytes would
    otherwise hold a transfer slot and a temp file as long as it liked.
    """
    file = AtomicFile(path)
    stop = threading.Event()
    try:
        early = _take_buffered(reader, request.body_left)
        left = request.body_left - len(early)
        source = None
        if left:
            transport.pause_reading()  # type: ignore[attr-defined]
            source = transport.get_extra_info("socket").dup()
    except BaseException:
        file.discard()
        raise
    # From here the thread alone touches the file (and the duplicate socket), and discards the file on
    # any failure, or when this request is cancelled and sets `stop`.
    work = asyncio.ensure_future(blocking(_receive_and_commit, file, early, source, left, claimed, stop))
    try:
        digest: str = await asyncio.shield(work)
    except _SlowBody as exc:
        counters["slow_body"] += 1
        request.body_left = 0  # no lingering over a body that does not come
        raise HttpError(408, str(exc)) from None
    except _Mismatch as exc:
        raise HttpError(400, str(exc), reason=CHECKSUM_MISMATCH_REASON) from None
    except asyncio.CancelledError:
        # The caller removes the directories it made once this returns: wait (a poll at most) until
        # the thread has discarded the file in them.
        stop.set()
        with contextlib.suppress(BaseException):
            await work
        raise
    request.body_left = 0
    if source is not None:
        transport.resume_reading()  # type: ignore[attr-defined]
    return os.stat(path), digest


class _SlowBody(Exception):
    """The body stalled or arrived too slowly."""


class _Mismatch(Exception):
    """The body's checksum is not the one the request claimed."""


class _Stopped(Exception):
    """The request was cancelled while its body was being received."""


def _take_buffered(reader: asyncio.StreamReader, limit: int) -> bytes:
    """Up to `limit` bytes the stream has already received, taken out of it without waiting for more.

    asyncio keeps them in the reader's `_buffer`, which no public method hands over without waiting
    when it is empty.
    """
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
    taken = bytes(buffer[:limit])
    del buffer[: len(taken)]
    return taken


def _receive_and_commit(
    file: AtomicFile,
    early: bytes,
    source: socket.socket | None,
    size: int,
    claimed: str | None,
    stop: threading.Event,
) -> str:
    """On a thread: write `early`, then `size` bytes received from `source`, into `file`; check the
    checksum against `claimed` and commit; return the checksum. Discards the file on any failure and
    closes `source`. Raises ConnectionError when the client closes early, `_SlowBody` when it stalls for
    `BODY_IDLE_S` or falls behind `MIN_BODY_RATE` after the grace, `_Mismatch` for other bytes than
    claimed, `_Stopped` once `stop` is set."""
    try:
        file.write(early)
        if source is not None:
            _receive_rest(source, file, size, len(early), stop)
        digest = file.checksum()
        if claimed is not None and digest != claimed:
            raise _Mismatch(f"received bytes hash to {digest}, not {claimed}")
        file.commit()
        return digest
    except BaseException:
        file.discard()
        raise
    finally:
        if source is not None:
            source.close()


def _receive_rest(
    source: socket.socket, file: AtomicFile, size: int, received: int, stop: threading.Event
) -> None:
    """Receive `size` bytes from `source` (`received` came before) into `file`."""
    buffer = memoryview(bytearray(min(size, WRITE_BATCH)))
    started = time.monotonic() + BODY_GRACE_S
    heard = time.monotonic()
    source.settimeout(_POLL_S)
    while size > 0:
        if stop.is_set():
            raise _Stopped
        try:
            n = source.recv_into(buffer, min(size, len(buffer)))
        except TimeoutError:
            if time.monotonic() - heard > BODY_IDLE_S:
                raise _SlowBody(f"no body bytes for {BODY_IDLE_S:g}s") from None
            continue
        if not n:
            raise ConnectionError(f"client closed with {size} body bytes unsent")
        heard = time.monotonic()
        size -= n
        received += n
        if heard > started + received / MIN_BODY_RATE:
            raise _SlowBody(f"body arriving slower than {MIN_BODY_RATE} bytes/s")
        file.write(buffer[:n])
