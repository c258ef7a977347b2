"""The data server: each node (and a submitting client) serves bulk data to its peers over plain HTTP.

Control messages go through the broker; bulk data (input splits, map outputs, reduce outputs) must not,
because the broker is a single shared pipe that every control message also needs. So every node serves
its own files and peers fetch them directly (`swarm.runtime.datafetch` is the blocking client).

The protocol is a minimal HTTP/1.1 subset (`swarm.runtime.httpwire`), written on `asyncio.start_server`
so the node needs no web framework (it has to run on old phones with only pure-Python wheels):

* `GET /f/<relpath>` streams a file under `root` with `Content-Length` and `X-Checksum` (CRC-32 hex,
  `swarm.checksum`, of the bytes sent). `Range: bytes=a-b` (one range) answers 206 with the checksum of
  that range, which is how map tasks read input splits. The checksum is computed from the very descriptor
  that is then streamed, so header and body agree even if the path is replaced meanwhile, and is cached by
  (device, inode, size, mtime, range), so a file served twice is hashed once. A client that sends
  `X-Want-Checksum: no` gets no `X-Checksum` and the server does not hash at all: it knows the checksum
  already (a reducer has the one its mapper reported) or does not need one (see `datafetch.fetch`).
* `PUT /f/<relpath>` (only with `allow_upload`) receives `Content-Length` bytes into a temp file beside
  the target, checks them against the request's `X-Checksum` (400 "Checksum Mismatch" and nothing kept),
  fsyncs and renames into place: a reader sees the old file or the whole new one, never a partial one.
* `DELETE /f/<relpath>` (only with `allow_delete`) removes a file or a directory tree, for job cleanup.
* `aliases` publishes chosen files from outside `root` under names of their own, read-only.

Paths are confined to `root`: `..`, `.`, empty or absolute components, NUL and backslashes are refused
(400), and a path whose symlinks resolve outside `root` is forbidden (403). Peers are not trusted to be
well-behaved: every request is bounded (head size, head and I/O timeouts, upload size), every bad one is
logged and answered, and nothing a peer sends can stop the server. One request per connection keeps the
state machine trivial; a connection costs far less than the transfers it carries. At most
`fetch_limit` transfers run at once; later ones wait their turn, so a burst of reducers cannot exhaust a
small device's file descriptors or disk bandwidth.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote

from swarm.checksum import Crc32
from swarm.durable import fsync_directory, write_all
from swarm.runtime.datafetch import (
    CHECKSUM_HEADER,
    CHECKSUM_MISMATCH_REASON,
    WANT_CHECKSUM_HEADER,
    checksum_fileobj,
    file_url,
    new_hasher,
)
from swarm.runtime.httpwire import (
    IO_TIMEOUT_S,
    MAX_HEAD_BYTES,
    WRITE_BATCH,
    HttpError,
    Request,
    content_length,
    linger,
    parse_head,
    parse_range,
    reply_error,
)

__all__ = ["DataServer"]

log = logging.getLogger(__name__)

HEAD_TIMEOUT_S = 30.0
SEND_CHUNK = 8 << 20
CHECKSUM_CACHE_SIZE = 4096

_CHECKSUM = re.compile(r"[0-9a-f]{8}")

_ChecksumKey = tuple[int, int, int, int, int, int]
_R = TypeVar("_R")
_Blocking = Callable[..., Awaitable[Any]]


class DataServer:
    """Serves the files under `root` to peers; use as `async with DataServer(root) as server: ...`.

    `host`/`port` are where it listens (port 0 picks a free one, read it back from `.port` after start;
    `any_port_if_taken` falls back to a free one when `port` is in use);
    `advertise_host` is the address peers should use when `host` is a wildcard. `allow_upload` enables PUT
    (the submitting client's server receives reduce outputs), `max_upload_bytes` caps one upload,
    `allow_delete` enables DELETE (a finished job's data is removed by whoever owns the job), and
    `fetch_limit` caps concurrent transfers. `aliases` publishes files that live outside `root` under
    names of their own (the submitter serves its input files, wherever they are, as `in/0`, `in/1` ...):
    read-only, and exactly those files, so nothing else outside `root` becomes reachable.
    """

    def __init__(
        self,
        root: Path,
        host: str = "0.0.0.0",
        port: int = 0,
        *,
        advertise_host: str | None = None,
        allow_upload: bool = False,
        max_upload_bytes: int | None = None,
        allow_delete: bool = False,
        fetch_limit: int = 16,
        aliases: Mapping[str, Path] | None = None,
        any_port_if_taken: bool = False,
    ) -> None:
        if fetch_limit < 1:
            raise ValueError("fetch_limit must be >= 1")
        try:
            self._aliases = {_checked_relpath(k): Path(v).resolve() for k, v in (aliases or {}).items()}
        except HttpError as exc:
            raise ValueError(f"bad alias name: {exc}") from None
        self.root = Path(root).resolve()
        self.host = host
        self.advertise_host = advertise_host
        self.allow_upload = allow_upload
        self.max_upload_bytes = max_upload_bytes
        self.allow_delete = allow_delete
        self.fetch_limit = fetch_limit
        self._port = port
        self._any_port_if_taken = any_port_if_taken
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(fetch_limit)
        self._sums: collections.OrderedDict[_ChecksumKey, str] = collections.OrderedDict()
        self._hashing: dict[_ChecksumKey, asyncio.Future[str]] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create `root` if needed and start listening."""
        if self._server is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._server = await self._listen(self._port)
        except OSError:
            if not (self._port and self._any_port_if_taken):
                raise
            self._server = await self._listen(0)
        # Its own threads for hashing and file I/O: borrowing the loop's default executor would let
        # unrelated blocking work (or, in one process, the very clients fetching from us) starve it.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(self.fetch_limit, 8), thread_name_prefix="dataserver"
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("data server on %s serving %s", self.url, self.root)

    async def _listen(self, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._handle, self.host, port, limit=MAX_HEAD_BYTES)

    async def close(self) -> None:
        """Stop listening and abort transfers in progress (their clients see a truncated body and retry)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()
        if self._pool is not None:
            self._pool.shutdown(wait=False)  # a hash still running finishes in the background
            self._pool = None

    async def __aenter__(self) -> DataServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        """The port listened on (the real one once started, even if 0 was asked for)."""
        return self._port

    @property
    def url(self) -> str:
        """The base URL peers use, e.g. `http://192.168.1.7:41234`."""
        host = self.advertise_host or self.host
        if ":" in host and not host.startswith("["):  # an IPv6 literal needs brackets in a URL
            host = f"[{host}]"
        return f"http://{host}:{self._port}"

    def url_for(self, relpath: str) -> str:
        """The URL at which peers fetch `relpath` (relative to `root`)."""
        return file_url(self.url, relpath)

    def path_for(self, relpath: str) -> Path:
        """The local path a GET of `relpath` reads, checked exactly as a request's path would be.

        Raises `ValueError` if the path is malformed or leaves `root`.
        """
        try:
            return self._local(relpath)
        except HttpError as exc:
            raise ValueError(str(exc)) from None

    async def _blocking(self, function: Callable[..., _R], *args: Any) -> _R:
        """Run blocking file work on the server's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    # -- connection handling ---------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        try:
            await self._serve_one(reader, writer, peer)
        except (ConnectionError, TimeoutError) as exc:
            log.info("data server: %s went away (%s)", peer, exc or type(exc).__name__)
        except Exception:
            log.exception("data server: unexpected error serving %s", peer)
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        request: Request | None = None
        try:
            try:
                async with asyncio.timeout(HEAD_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    log.warning("data server: bad request from %s: connection closed inside the head", peer)
                return
            except asyncio.LimitOverrunError:
                raise HttpError(431, f"request head over {MAX_HEAD_BYTES} bytes") from None
            except TimeoutError:
                raise HttpError(408, f"no complete request head within {HEAD_TIMEOUT_S:.0f}s") from None
            request = parse_head(head, peer)
            status = await self._dispatch(request, reader, writer)
            log.debug("data server: %s %s %s -> %d", peer, request.method, request.target, status)
        except HttpError as err:
            what = f"{request.method} {request.target}" if request else "request"
            log.warning("data server: %s from %s refused: %d %s", what, peer, err.status, err)
            await reply_error(writer, err)
            if request is not None and request.body_left:
                await linger(reader, request.body_left)
        except (ConnectionError, TimeoutError):
            raise
        except Exception:
            if request is None or request.answered:
                raise
            log.exception("data server: %s %s from %s failed", request.method, request.target, peer)
            await reply_error(writer, HttpError(500, "internal error; see the serving node's log"))

    async def _dispatch(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> int:
        path, _, _query = request.target.partition("?")
        if not path.startswith("/f/"):
            raise HttpError(404, "only /f/<path> is served")
        try:
            relpath = unquote(path[3:], errors="strict")
        except UnicodeDecodeError:
            raise HttpError(400, "path is not UTF-8") from None
        if request.method == "GET":
            return await self._get(request, relpath, writer)
        if request.method == "PUT":
            return await self._put(request, relpath, reader, writer)
        if request.method == "DELETE":
            return await self._delete(request, relpath, writer)
        raise HttpError(405, f"method {request.method} not allowed", headers={"Allow": "GET, PUT, DELETE"})

    # -- paths -----------------------------------------------------------------------------------------

    def _resolve(self, relpath: str) -> Path:
        """The path of `relpath` with symlinks resolved, which must lie strictly inside `root`."""
        resolved = (self.root / _checked_relpath(relpath)).resolve()
        if resolved == self.root or not resolved.is_relative_to(self.root):
            raise HttpError(403, "path leaves the served directory")
        return resolved

    # -- GET -------------------------------------------------------------------------------------------

    def _local(self, relpath: str) -> Path:
        """Where a GET of `relpath` reads: a published file, or a path inside `root`."""
        return self._aliases.get(_checked_relpath(relpath)) or self._resolve(relpath)

    def _refuse_alias(self, relpath: str) -> None:
        if _checked_relpath(relpath) in self._aliases:
            raise HttpError(403, "a published file is read-only")

    async def _get(self, request: Request, relpath: str, writer: asyncio.StreamWriter) -> int:
        path = self._local(relpath)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise HttpError(404, "no such file") from None
        except PermissionError:
            raise HttpError(403, "file not readable") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # directories, FIFOs, devices: never block on them
            os.close(fd)
            raise HttpError(404, "not a regular file")
        with os.fdopen(fd, "rb") as file:
            size = info.st_size
            range_header = request.headers.get("range")
            if range_header is None:
                status, start, length = 200, 0, size
                headers = {}
            else:
                start, length = parse_range(range_header, size)
                status = 206
                headers = {"Content-Range": f"bytes {start}-{start + length - 1}/{size}"}
            async with self._slots:
                if request.headers.get(WANT_CHECKSUM_HEADER.lower(), "").strip().lower() != "no":
                    headers[CHECKSUM_HEADER] = await self._checksum(fd, info, start, length)
                headers |= {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(length),
                    "Accept-Ranges": "bytes",
                }
                request.answer(writer, status, headers)
                await _stream(writer, file, start, length)
        return status

    async def _checksum(self, fd: int, info: os.stat_result, start: int, length: int) -> str:
        """The checksum of `length` bytes from `start`, hashed off the loop once per file version."""
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

    def _hashed(self, key: _ChecksumKey, done: asyncio.Future[str]) -> None:
        self._hashing.pop(key, None)
        if not done.cancelled() and done.exception() is None:
            self._remember(key, done.result())

    def _remember(self, key: _ChecksumKey, digest: str) -> None:
        self._sums[key] = digest
        self._sums.move_to_end(key)
        while len(self._sums) > CHECKSUM_CACHE_SIZE:
            self._sums.popitem(last=False)

    # -- PUT -------------------------------------------------------------------------------------------

    async def _put(
        self, request: Request, relpath: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> int:
        length = content_length(request)
        request.body_left = length
        if not self.allow_upload:
            raise HttpError(403, "uploads are disabled on this node")
        if self.max_upload_bytes is not None and length > self.max_upload_bytes:
            raise HttpError(413, f"{length} bytes is over the limit of {self.max_upload_bytes}")
        claimed = request.headers.get(CHECKSUM_HEADER.lower())
        if claimed is not None:
            claimed = claimed.strip().lower()
            if not _CHECKSUM.fullmatch(claimed):
                raise HttpError(400, f"{CHECKSUM_HEADER} is not 8 hex digits")
        self._refuse_alias(relpath)
        path = self._resolve(relpath)
        if path.is_dir():
            raise HttpError(409, "a directory has that name")
        created = [d for d in (path.parent, *path.parent.parents) if d.is_relative_to(self.root)]
        created = [d for d in created if d != self.root and not d.exists()]  # deepest first
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise HttpError(409, "a file stands where a directory is needed") from None
        try:
            async with self._slots:
                if request.headers.get("expect", "").lower() == "100-continue":  # curl asks, then waits
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                info, digest = await self._store(request, reader, path, claimed)
        except BaseException:
            for directory in created:  # a refused upload leaves nothing behind, not even its directories
                with contextlib.suppress(OSError):
                    directory.rmdir()
            raise
        await self._blocking(fsync_directory, path.parent)
        self._remember((info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, 0, info.st_size), digest)
        request.answer(writer, 201, {"Content-Length": "0", CHECKSUM_HEADER: digest})
        await writer.drain()
        return 201

    async def _store(
        self, request: Request, reader: asyncio.StreamReader, path: Path, claimed: str | None
    ) -> tuple[os.stat_result, str]:
        """Receive the body into a temp file beside `path`, verify, fsync, rename into place."""
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".upload", dir=path.parent)
        temp = Path(temp_name)
        try:
            digest = await _receive(reader, fd, request, self._blocking)
            if claimed is not None and digest != claimed:
                raise HttpError(
                    400, f"received bytes hash to {digest}, not {claimed}", reason=CHECKSUM_MISMATCH_REASON
                )
            owned, fd = fd, -1  # the thread closes it, even if this request is cancelled meanwhile
            info = await self._blocking(_sync_and_close, owned)
            os.replace(temp, path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        return info, digest

    # -- DELETE ----------------------------------------------------------------------------------------

    async def _delete(self, request: Request, relpath: str, writer: asyncio.StreamWriter) -> int:
        if not self.allow_delete:
            raise HttpError(403, "deletes are disabled on this node")
        # Check the parent with symlinks resolved, but act on the name itself: deleting a symlink removes
        # the link, never what it points to.
        self._refuse_alias(relpath)
        candidate = self.root / _checked_relpath(relpath)
        parent = candidate.parent.resolve()
        if not parent.is_relative_to(self.root):
            raise HttpError(403, "path leaves the served directory")
        target = parent / candidate.name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            await self._blocking(shutil.rmtree, target)
        else:
            raise HttpError(404, "no such file or directory")
        request.answer(writer, 204, {})
        await writer.drain()
        return 204


def _checked_relpath(relpath: str) -> str:
    """`relpath` without a trailing slash, if it is a plain relative path; else a 400."""
    relpath = relpath.removesuffix("/")
    if not relpath:
        raise HttpError(400, "empty path")
    if "\x00" in relpath or "\\" in relpath:
        raise HttpError(400, "path contains NUL or a backslash")
    if relpath.startswith("/"):
        raise HttpError(400, "absolute path")
    if any(part in ("", ".", "..") for part in relpath.split("/")):
        raise HttpError(400, "path has an empty, '.' or '..' component")
    return relpath


async def _stream(writer: asyncio.StreamWriter, file: BinaryIO, start: int, length: int) -> None:
    """Send `length` bytes of `file` from `start`, by `sendfile` where the loop can, in bounded chunks."""
    await writer.drain()
    loop = asyncio.get_running_loop()
    offset, end = start, start + length
    while offset < end:
        async with asyncio.timeout(IO_TIMEOUT_S):  # a stalled reader must not hold a transfer slot forever
            sent = await loop.sendfile(writer.transport, file, offset, min(SEND_CHUNK, end - offset))
        if sent == 0:  # the file shrank under us: close early, the client sees a short body and retries
            raise ConnectionError(f"file ended {end - offset} bytes early")
        offset += sent


async def _receive(reader: asyncio.StreamReader, fd: int, request: Request, blocking: _Blocking) -> str:
    """Read the request body into `fd`; return its checksum.

    The loop only receives: each ~1 MiB batch is checksummed and written by a thread (zlib and the
    write release the GIL) while the loop receives the next one, so the two overlap.
    """
    hasher = new_hasher()
    batch: list[bytes] = []
    batched = 0
    while request.body_left > 0:
        async with asyncio.timeout(IO_TIMEOUT_S):
            block = await reader.read(min(request.body_left, WRITE_BATCH))
        if not block:
            raise ConnectionError(f"client closed with {request.body_left} body bytes unsent")
        request.body_left -= len(block)
        batch.append(block)
        batched += len(block)
        if batched >= WRITE_BATCH or request.body_left == 0:
            await blocking(_hash_and_write, os.dup(fd), batch, hasher)
            batch, batched = [], 0
    return hasher.hexdigest()


# -- blocking file work, run in threads ----------------------------------------------------------------


def _hash_fd(fd: int, start: int, length: int) -> str:
    with os.fdopen(fd, "rb") as file:
        return checksum_fileobj(file, start, length)


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
