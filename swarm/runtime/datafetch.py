"""Blocking client for the data plane: fetch and upload bulk data between peers, never through the broker.

Task code runs in worker processes with no event loop, so these functions block (plain `http.client`,
no asyncio). They are the only way task code should move bulk data, because they give one guarantee the
caller can build on: **a call returns complete, verified data or raises `FetchError`; never a partial
or corrupt result.** That is what lets a reducer trust what it merges and lets the client trust
`mr-out-<r>`.

Every call presents a capability token (`token=`, sent as `Authorization: Bearer <token>`): data servers
serve a job's data only to its token (see `swarm.runtime.dataserver`), so there is no call without one.

How:

* Every transfer is checked twice: its length against `Content-Length` (a connection cut mid-body looks
  like a short read, not an error, to `http.client`) and its bytes against a CRC-32 checksum
  (`swarm.checksum`): the caller's `expected_checksum`, else the server's `X-Checksum` header. A response
  with neither cannot be verified and is refused, unless the caller asked for the length check alone
  (`verify=False`, for input splits: see `fetch`).
* Connection errors, timeouts, truncation, checksum mismatches and 5xx answers are retried with a short
  jittered backoff (the peer may be restarting or full, or a packet was mangled); 4xx answers are not
  (asking again for a missing file, or with a token that was refused, changes nothing), except a PUT the
  server rejected for a checksum mismatch, which is corruption in transit until proven otherwise, and a
  408 (the server gave up waiting on us).
* `fetch(..., dest=path)` streams into a temp file beside `dest` and renames it into place only once it
  is verified, so memory stays bounded and no reader ever sees a partial `dest`. It does not fsync: a
  fetched file is a copy of data its peer still holds, and after a crash the task that wanted it runs
  again. The server's PUT, which stores final outputs, does fsync.

The checksum helpers live here, not in the server, so that the server (which imports them) and the client
agree on one definition of a checksum.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import queue
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, TypeVar, overload
from urllib.parse import quote, urlsplit

from swarm.checksum import checksum_bytes, new_hasher
from swarm.errors import RemoteError
from swarm.runtime.httpwire import is_token

__all__ = [
    "CHECKSUM_HEADER",
    "CHECKSUM_MISMATCH_REASON",
    "WANT_CHECKSUM_HEADER",
    "FetchError",
    "bearer_header",
    "checksum_bytes",
    "checksum_file",
    "checksum_fileobj",
    "delete",
    "fetch",
    "file_url",
    "new_hasher",
    "upload",
]

log = logging.getLogger(__name__)

CHECKSUM_HEADER = "X-Checksum"
# A GET carrying this header with "no" asks the server not to hash what it sends (the client knows the
# checksum already, or needs none): hashing costs the server more CPU than sending.
WANT_CHECKSUM_HEADER = "X-Want-Checksum"
# The reason phrase of the 400 a server sends when an upload's bytes do not match its X-Checksum: the one
# 400 worth retrying, so the client must tell it apart from a bad path without parsing a body.
CHECKSUM_MISMATCH_REASON = "Checksum Mismatch"
CHUNK = 1 << 20
PIPELINE_BUFFERS = 4
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 2.0

_T = TypeVar("_T")


class FetchError(RemoteError):
    """A transfer with a peer failed for good: the data is missing, unreachable or kept arriving damaged.

    `status` is the HTTP status of the last answer (None when there was none, e.g. connection refused);
    `retryable` says whether the last failure was of a kind worth trying again later.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.retryable = retryable


def checksum_fileobj(file: BinaryIO, start: int = 0, length: int | None = None) -> str:
    """Hex checksum of `length` bytes of an open file from `start` (to its end when `length` is None).

    Reads in bounded chunks, so memory stays flat whatever the size, with `os.pread` where the platform
    has it, so the file's position is left alone. The server hashes the very descriptor it is about to
    stream, which is what makes the header match the body even if the path is replaced meanwhile.
    Raises `OSError` if the file is shorter than asked.
    """
    fd = file.fileno()
    if length is None:
        length = max(0, os.fstat(fd).st_size - start)
    hasher = new_hasher()
    offset, remaining = start, length
    while remaining > 0:
        if hasattr(os, "pread"):
            block = os.pread(fd, min(CHUNK, remaining), offset)
        else:  # Windows has no pread; the caller is not using the file's position meanwhile
            file.seek(offset)
            block = file.read(min(CHUNK, remaining))
        if not block:
            raise OSError(f"file ended {remaining} bytes early while hashing")
        hasher.update(block)
        offset += len(block)
        remaining -= len(block)
    return hasher.hexdigest()


def checksum_file(path: Path | str, start: int = 0, length: int | None = None) -> str:
    """Hex checksum of a file (or of `length` bytes of it from `start`)."""
    with open(path, "rb") as file:
        return checksum_fileobj(file, start, length)


def bearer_header(token: str) -> dict[str, str]:
    """The header that presents capability `token` to a data server; `ValueError` if it is not one."""
    if not isinstance(token, str) or not is_token(token):
        raise ValueError("not a capability token (16-256 characters of A-Z a-z 0-9 - _)")
    return {"Authorization": f"Bearer {token}"}


def file_url(base_url: str, relpath: str) -> str:
    """The URL of `relpath` on the data server at `base_url`, percent-encoded so any file name survives."""
    return f"{base_url.rstrip('/')}/f/{quote(relpath.lstrip('/'), safe='/')}"


class _Failed(Exception):
    """One attempt failed; `retryable` says whether another attempt might succeed."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class _Connection(http.client.HTTPConnection):
    """One request per connection, whose `close` also closes the response.

    http.client hands the socket over to a response when the server says `Connection: close`; a
    response not read to the end would keep it open until garbage collection.
    """

    _last: http.client.HTTPResponse | None = None

    def getresponse(self) -> http.client.HTTPResponse:
        self._last = super().getresponse()
        return self._last

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._last is not None:
                self._last.close()


def _split_url(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise FetchError(f"bad port in URL {url!r}", url=url, retryable=False) from exc
    if parts.scheme != "http" or not parts.hostname:
        raise FetchError(f"not an http:// URL: {url!r}", url=url, retryable=False)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.hostname, port, target


def _status_failure(response: http.client.HTTPResponse, what: str) -> _Failed:
    """An unexpected status: 5xx may pass (overload, restart), and so may a 408 (the server gave up on
    a slow moment of ours); other 4xx will not."""
    detail = response.read(512).decode("utf-8", "replace").strip()
    message = f"{what} answered HTTP {response.status} {response.reason}" + (f": {detail}" if detail else "")
    return _Failed(
        message, status=response.status, retryable=response.status >= 500 or response.status == 408
    )


def _backoff(attempt: int) -> float:
    return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt) * (0.5 + random.random()))


def _with_retries(url: str, what: str, retries: int, once: Callable[[], _T]) -> _T:
    """Run `once` until it succeeds, fails for good, or `retries` further attempts have failed."""
    if retries < 0:
        raise ValueError("retries must be >= 0")
    attempts = retries + 1
    last = _Failed("no attempt made")
    for attempt in range(attempts):
        if attempt:
            time.sleep(_backoff(attempt - 1))
        try:
            return once()
        except _LocalIOError as exc:
            raise exc.error from None
        except _Failed as exc:
            last = exc
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, garbled answer
            last = _Failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if not last.retryable:
            attempts = attempt + 1
            break
        if attempt + 1 < attempts:
            log.warning(
                "%s %s failed (attempt %d of %d): %s; retrying", what, url, attempt + 1, attempts, last
            )
    plural = "s" if attempts > 1 else ""
    raise FetchError(
        f"{what} {url} failed after {attempts} attempt{plural}: {last}",
        url=url,
        status=last.status,
        retryable=last.retryable,
    )


class _LocalIOError(Exception):
    """Our own disk failed (full, read-only, permission): not the peer's fault, so not retried and not
    reported as a `FetchError`; the original `OSError` reaches the caller."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def _local_io() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _LocalIOError(exc) from exc


class _FileSink:
    """Streams a body into a temp file beside `dest`; `commit` renames it into place, `discard` removes it."""

    def __init__(self, dest: Path) -> None:
        self._dest = dest
        with _local_io():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        self._temp = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=0)

    def write(self, block: memoryview) -> None:
        with _local_io():
            self._file.write(block)  # unbuffered raw file: loops until all written

    def commit(self) -> Path:
        with _local_io():
            self._file.close()
            os.replace(self._temp, self._dest)
        return self._dest

    def discard(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._temp.unlink()


def _content_length(response: http.client.HTTPResponse) -> int:
    raw = response.getheader("Content-Length")
    if raw is None or not _is_number(raw.strip()):
        raise _Failed(f"answer has no usable Content-Length ({raw!r})", retryable=False)
    return int(raw)


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _check_content_range(response: http.client.HTTPResponse, start: int, last: int, length: int) -> None:
    """A 206 must carry exactly the bytes asked for (or fewer at end of file), and say so."""
    raw = response.getheader("Content-Range", "")
    unit, _, spec = raw.partition(" ")
    first, _, rest = spec.partition("-")
    end, _, _total = rest.partition("/")
    if unit != "bytes" or not _is_number(first) or not _is_number(end):
        raise _Failed(f"206 answer has a bad Content-Range {raw!r}", retryable=False)
    if int(first) != start or int(end) > last or int(end) - int(first) + 1 != length:
        raise _Failed(f"asked for bytes {start}-{last}, got {raw!r} with {length} bytes", retryable=False)


@overload
def fetch(
    url: str,
    dest: None = None,
    *,
    token: str,
    byte_range: tuple[int, int] | None = None,
    expected_checksum: str | None = None,
    verify: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
) -> bytes: ...


@overload
def fetch(
    url: str,
    dest: Path,
    *,
    token: str,
    byte_range: tuple[int, int] | None = None,
    expected_checksum: str | None = None,
    verify: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
) -> Path: ...


@overload
def fetch(
    url: str,
    dest: Path | None,
    *,
    token: str,
    byte_range: tuple[int, int] | None = None,
    expected_checksum: str | None = None,
    verify: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
) -> bytes | Path: ...


def fetch(
    url: str,
    dest: Path | None = None,
    *,
    token: str,
    byte_range: tuple[int, int] | None = None,
    expected_checksum: str | None = None,
    verify: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
) -> bytes | Path:
    """GET `url` with capability `token`; return its bytes, or write them atomically to `dest` and
    return `dest`.

    `byte_range` is `(first, last)`, both INCLUSIVE, exactly as in HTTP's `Range: bytes=first-last`:
    `(0, 99)` is the first 100 bytes, and an empty range cannot be asked for (the caller knows its
    answer). A range running past the end of the file yields the bytes up to the end.
    The body is verified against `expected_checksum` when given, else against the server's `X-Checksum`
    (of the file, or of the range for a range request); with `expected_checksum` the server is asked not
    to hash at all. `verify=False` accepts a body of the announced length with no checksum: for data
    whose checksum would only guard the wire, which TCP's already does, at more CPU than the transfer
    itself (a map task's input split, read from the submitter's own file; runs and outputs, which sit
    on peers' disks between writer and reader, are always verified). `timeout` bounds each socket
    operation (connect, each read), not the whole transfer, so a large file on a slow link is not cut
    off. `retries` is the number of further attempts after the first. Raises `FetchError` when no
    attempt gave verified data, and the `OSError` itself, at once, if `dest` cannot be written (a
    local fault, not the peer's).
    """
    host, port, target = _split_url(url)
    headers = bearer_header(token)
    first = last = 0
    if byte_range is not None:
        first, last = byte_range
        if first < 0 or last < first:
            raise ValueError(f"bad byte_range {byte_range!r}: need 0 <= first <= last (both inclusive)")
        headers["Range"] = f"bytes={first}-{last}"
    want = expected_checksum.strip().lower() if expected_checksum is not None else None
    if want is not None or not verify:
        headers[WANT_CHECKSUM_HEADER] = "no"

    def once() -> bytes | Path:
        conn = _Connection(host, port, timeout=timeout)
        try:
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            if response.status != (206 if byte_range is not None else 200):
                raise _status_failure(response, "GET")
            length = _content_length(response)
            if byte_range is not None:
                _check_content_range(response, first, last, length)
            expected = want if want is not None else response.getheader(CHECKSUM_HEADER) if verify else None
            if verify and expected is None:
                raise _Failed(f"answer has no {CHECKSUM_HEADER} and no checksum was given", retryable=False)
            if dest is None:
                # One read straight into the result: a body in memory is copied once, from the socket.
                body = response.read(length)
                if len(body) < length:  # http.client reports a body cut short as a short read
                    raise _Failed(f"truncated: got {len(body)} of {length} bytes")
                _check_digest(checksum_bytes(body) if expected is not None else None, expected, want)
                return body
            sink = _FileSink(dest)
            try:
                _check_digest(_receive(response, length, sink, hashed=expected is not None), expected, want)
                return sink.commit()
            except BaseException:
                sink.discard()
                raise
        finally:
            conn.close()

    return _with_retries(url, "GET", retries, once)


def _check_digest(digest: str | None, expected: str | None, want: str | None) -> None:
    if digest != (expected.strip().lower() if expected is not None else None):
        source = "expected" if want is not None else "server's"
        raise _Failed(f"checksum mismatch: got {digest}, {source} is {expected}")


def _receive(response: http.client.HTTPResponse, length: int, sink: _FileSink, hashed: bool) -> str | None:
    """Stream exactly `length` body bytes into `sink` in bounded chunks; return their checksum, or None
    when not `hashed`."""
    with _HashPipeline(length, enabled=hashed) as hasher:
        received = 0
        while received < length:
            buffer = hasher.buffer()
            n = response.readinto(buffer[: min(len(buffer), length - received)])
            if not n:  # http.client reports a body cut short as a short read, not as an error
                raise _Failed(f"truncated: got {received} of {length} bytes")
            sink.write(buffer[:n])
            hasher.feed(buffer, n)
            received += n
        return hasher.hexdigest()


class _HashPipeline:
    """Hashes received blocks on a helper thread while the caller reads the next ones.

    CRC-32 runs near 2.3 GB/s per core here, slower than loopback carries, and slow devices checksum
    far slower. zlib releases the GIL while it checksums, so a second thread overlaps that with
    receiving and writing. A small pool of buffers bounds memory: a buffer returns to the pool only once
    hashed. Bodies of one or two chunks are hashed inline, and nothing is hashed unless `enabled` (the
    pool still bounds memory).
    """

    def __init__(self, length: int, enabled: bool = True) -> None:
        self._hasher = new_hasher()
        self._enabled = enabled
        size = min(CHUNK, max(length, 1))
        self._threaded = enabled and length > 2 * CHUNK
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        for _ in range(PIPELINE_BUFFERS if self._threaded else 1):
            self._free.put(memoryview(bytearray(size)))
        self._work: queue.SimpleQueue[tuple[memoryview, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if self._threaded:
            self._thread = threading.Thread(target=self._run, name="datafetch-hash", daemon=True)
            self._thread.start()

    def __enter__(self) -> _HashPipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._finish()

    def buffer(self) -> memoryview:
        """A free buffer to read into (waits while all are being hashed)."""
        return self._free.get()

    def feed(self, buffer: memoryview, n: int) -> None:
        """Hash the first `n` bytes of `buffer`, then return it to the pool."""
        if self._threaded:
            self._work.put((buffer, n))
        else:
            if self._enabled:
                self._hasher.update(buffer[:n])
            self._free.put(buffer)

    def hexdigest(self) -> str | None:
        """The checksum of everything fed, or None when not enabled."""
        self._finish()
        return self._hasher.hexdigest() if self._enabled else None

    def _finish(self) -> None:
        if self._thread is not None:
            self._work.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            buffer, n = item
            self._hasher.update(buffer[:n])
            self._free.put(buffer)


def upload(
    url: str,
    source: Path | bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview],
    *,
    token: str,
    retries: int = 3,
    timeout: float = 60.0,
) -> str:
    """PUT `source` (a file, streamed; bytes in memory; or a sequence of buffers, sent one after the
    other as one body) to `url` with its checksum and capability `token`; return the checksum.

    The server stores it atomically and only if the bytes it received match the checksum, so a
    successful return means the peer holds exactly `source`. `retries` and `timeout` are as in
    `fetch`. Raises `FetchError` when no attempt succeeded; `OSError` if `source` cannot be read.
    """
    host, port, target = _split_url(url)
    auth = bearer_header(token)
    body: Path | list[memoryview]
    if isinstance(source, Path):
        body, size, digest = source, os.stat(source).st_size, checksum_file(source)
    else:
        parts = [source] if isinstance(source, bytes | bytearray | memoryview) else source
        body = [memoryview(part).cast("B") for part in parts]
        hasher = new_hasher()
        for part in body:
            hasher.update(part)
        size, digest = sum(len(part) for part in body), hasher.hexdigest()

    def once() -> str:
        conn = _Connection(host, port, timeout=timeout)
        try:
            conn.putrequest("PUT", target, skip_accept_encoding=True)
            conn.putheader("Content-Length", str(size))
            conn.putheader(CHECKSUM_HEADER, digest)
            for name, value in auth.items():
                conn.putheader(name, value)
            conn.endheaders()
            try:
                _send(conn, body, size)
            except OSError as send_error:
                # The server may have answered early (403, 413) and closed: its answer says more than EPIPE.
                try:
                    response = conn.getresponse()
                except (OSError, http.client.HTTPException):
                    raise send_error from None
                raise _status_failure(response, "PUT") from send_error
            response = conn.getresponse()
            if response.status == 400 and response.reason == CHECKSUM_MISMATCH_REASON:
                raise _Failed("server received bytes that do not match the checksum (damaged in transit?)")
            if response.status not in (200, 201, 204):
                raise _status_failure(response, "PUT")
            stored = response.getheader(CHECKSUM_HEADER)
            if stored is not None and stored.strip().lower() != digest:
                raise _Failed(f"server stored checksum {stored}, sent {digest}")
            return digest
        finally:
            conn.close()

    return _with_retries(url, "PUT", retries, once)


def _send(conn: http.client.HTTPConnection, source: Path | list[memoryview], size: int) -> None:
    if not isinstance(source, Path):
        for part in source:
            conn.send(part)
        return
    with _local_io():
        file = open(source, "rb", buffering=0)  # noqa: SIM115 - closed below; only its reads are local I/O
    with file:
        buffer = memoryview(bytearray(CHUNK))
        sent = 0
        while sent < size:
            with _local_io():
                n = file.readinto(buffer[: min(CHUNK, size - sent)])
            if not n:
                raise _Failed(f"{source} shrank while being uploaded", retryable=False)
            conn.send(buffer[:n])
            sent += n


def delete(url: str, *, token: str, retries: int = 3, timeout: float = 60.0) -> bool:
    """DELETE `url` (a file or a directory tree, e.g. a finished job's data) with capability `token`;
    False if it was not there."""
    host, port, target = _split_url(url)
    headers = bearer_header(token)

    def once() -> bool:
        conn = _Connection(host, port, timeout=timeout)
        try:
            conn.request("DELETE", target, headers=headers)
            response = conn.getresponse()
            if response.status == 404:
                return False
            if response.status not in (200, 204):
                raise _status_failure(response, "DELETE")
            return True
        finally:
            conn.close()

    return _with_retries(url, "DELETE", retries, once)
