"""The data server: each node (and a submitting client) serves bulk data to its peers over plain HTTP.

Control messages go through the broker; bulk data (input splits, map outputs, reduce outputs) must not,
because the broker is a single shared pipe that every control message also needs. So every node serves
its own files and peers fetch them directly (`swarm.runtime.datafetch` is the blocking client).

The protocol is a minimal HTTP/1.1 subset (`swarm.runtime.httpwire`), written on `asyncio.start_server`
so the node needs no web framework (it has to run on old phones with only pure-Python wheels):

* `GET /f/<relpath>` streams a file with `Content-Length` and `X-Checksum` (CRC-32 hex,
  `swarm.checksum`, of the bytes sent). `Range: bytes=a-b` (one range) answers 206 with the checksum of
  that range, which is how map tasks read input splits. The checksum is computed from the very descriptor
  that is then streamed, so header and body agree even if the path is replaced meanwhile, and a file
  served twice is hashed once (`swarm.runtime.checksumcache`). A client that sends `X-Want-Checksum: no`
  gets no `X-Checksum` and the server does not hash at all: it knows the checksum already (a reducer has
  the one its mapper reported) or does not need one (see `datafetch.fetch`).
* `PUT /f/<relpath>` (only with `allow_upload`) stores `Content-Length` bytes atomically, checked against
  the request's `X-Checksum` (`swarm.runtime.dataupload`).
* `DELETE /f/<relpath>` (only with `allow_delete`) removes a file or a directory tree, for job cleanup.
* `aliases` publishes chosen files from outside `root` under names of their own, read-only.

Access control. Every request must present the capability token of the job its path belongs to
(`Authorization: Bearer <token>`; `swarm.runtime.jobaccess` says where tokens come from). A node's
server holds its jobs' data in `<root>/mr/<job id>/` and accepts the tokens each job's `.capability` file
lists; a submitter's server (`job=`) serves one job, whose token it is given. A request without a token,
with one its path's job does not accept, or for a path outside every job is refused (401/403) and
counted (`counters`). Paths are plain names (`httpwire.is_name`: no `..`, no dot files, bounded), and
a path whose symlinks resolve outside its job's directory is forbidden.

Peers are not trusted to be well-behaved: connections are capped per peer address and in total (when
full, the oldest connection still waiting for its request head makes room for a new one, so a crowd of
half-sent heads cannot lock clients out); a request head must arrive whole within `head_timeout`, and a
body at a minimum rate; uploads are capped per request and per job (`dataupload.UploadBudget`); every
bad request is logged and answered, and nothing a peer sends can stop the server. One request per
connection keeps the state machine trivial and leaves no idle keep-alive connections; a connection costs
far less than the transfers it carries. At most `fetch_limit` transfers run at once; later ones wait
their turn, so a burst of reducers cannot exhaust a small device's file descriptors or disk bandwidth.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import errno
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from swarm.beneath import CLOEXEC, DIRECTORY, NONBLOCK, open_beneath
from swarm.runtime.checksumcache import ChecksumCache
from swarm.runtime.datafetch import (
    CHECKSUM_HEADER,
    WANT_CHECKSUM_HEADER,
    file_url,
)
from swarm.runtime.dataupload import (
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_UPLOAD_BUDGET,
    UploadBudget,
    claimed_checksum,
    make_parents,
    remove_made,
    store,
)
from swarm.runtime.filesend import send_file_range
from swarm.runtime.httpwire import (
    MAX_HEAD_BYTES,
    HttpError,
    Request,
    bearer_token,
    checked_parts,
    content_length,
    is_name,
    linger,
    parse_head,
    parse_path,
    parse_range,
    reply_error,
)
from swarm.runtime.jobaccess import JOBS_DIR, Capabilities

__all__ = ["DataServer"]

log = logging.getLogger(__name__)

HEAD_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 256
#: A node with many slots runs a few parallel fetches per reduce task, all from one address.
MAX_CONNECTIONS_PER_PEER = 64
#: A refusal of a request that presented no valid token lingers over its body only this much.
ANONYMOUS_LINGER_S = 1.0
ANONYMOUS_LINGER_BYTES = 1 << 20

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)

_R = TypeVar("_R")


# -- the server ------------------------------------------------------------------------------------------


class DataServer:
    """Serves job data under `root` to peers that hold the job's token; use as
    `async with DataServer(root, ...) as server: ...`.

    `host`/`port` are where it listens (port 0 picks a free one, read it back from `.port` after start;
    `any_port_if_taken` falls back to a free one when `port` is in use); `advertise_host` is the address
    peers should use when `host` is a wildcard.

    Whose data: by default (a node) the data of job `j` is `<root>/mr/j/...`, served to the tokens listed
    in `<root>/mr/j/.capability` and to those granted in `capabilities` (job id -> token or tokens);
    nothing else under `root` is served. With `job`, the server belongs to that one job (a submitter's):
    every path under `root` and every alias is that job's, served to the tokens `capabilities` grants it.
    More can be granted later through `.capabilities`.

    `allow_upload` enables PUT (the submitter's server receives reduce outputs): at most
    `max_upload_bytes` per request, and at most `upload_budget` bytes stored per job over all its
    uploads (a replaced file gives its bytes back); `upload_names`, when given, are the only paths that
    may be written. `allow_delete` enables DELETE. `fetch_limit` caps concurrent transfers.
    `aliases` publishes files that live outside `root` under names of their own (the submitter serves its
    input files, wherever they are, as `in/0`, `in/1` ...): read-only, and exactly those files.
    `max_connections`, `max_connections_per_peer` and `head_timeout` bound what clients hold.
    """

    def __init__(
        self,
        root: Path,
        host: str = "0.0.0.0",
        port: int = 0,
        *,
        job: str | None = None,
        capabilities: Mapping[str, str | Iterable[str]] | None = None,
        advertise_host: str | None = None,
        allow_upload: bool = False,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        upload_budget: int = DEFAULT_UPLOAD_BUDGET,
        upload_names: Iterable[str] | None = None,
        allow_delete: bool = False,
        fetch_limit: int = 16,
        aliases: Mapping[str, Path] | None = None,
        any_port_if_taken: bool = False,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_peer: int = MAX_CONNECTIONS_PER_PEER,
        head_timeout: float = HEAD_TIMEOUT_S,
    ) -> None:
        if fetch_limit < 1 or max_connections < 1 or max_connections_per_peer < 1:
            raise ValueError("fetch_limit and the connection limits must be >= 1")
        if max_upload_bytes < 0 or upload_budget < 0 or head_timeout <= 0:
            raise ValueError("upload limits must be >= 0 and head_timeout > 0")
        if job is not None and not is_name(job):
            raise ValueError(f"bad job id {job[:40]!r}")
        try:
            self._aliases = {_relpath(k): Path(v).resolve() for k, v in (aliases or {}).items()}
            self._upload_names = None if upload_names is None else {_relpath(n) for n in upload_names}
        except HttpError as exc:
            raise ValueError(f"bad alias or upload name: {exc}") from None
        self.root = Path(root).resolve()
        self.job = job
        self.capabilities = Capabilities(None if job is not None else self.root / JOBS_DIR, capabilities)
        self.host = host
        self.advertise_host = advertise_host
        self.allow_upload = allow_upload
        self.allow_delete = allow_delete
        self.fetch_limit = fetch_limit
        self.max_connections = max_connections
        self.max_connections_per_peer = max_connections_per_peer
        self.head_timeout = head_timeout
        self._port = port
        self._any_port_if_taken = any_port_if_taken
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._per_peer: collections.Counter[str] = collections.Counter()
        # Connections still waiting for their request head, oldest first: the ones to drop when full.
        self._awaiting_head: dict[asyncio.Task[None], None] = {}
        self._slots = asyncio.Semaphore(fetch_limit)
        self._sums = ChecksumCache(self._blocking)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._counters: collections.Counter[str] = collections.Counter()
        self._budget = UploadBudget(max_upload_bytes, upload_budget, self._counters)

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

    @property
    def counters(self) -> dict[str, int]:
        """How many requests and connections were refused, by reason (for logs and status)."""
        return dict(self._counters)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._connections)

    def url_for(self, relpath: str) -> str:
        """The URL at which peers fetch `relpath` (relative to `root`)."""
        return file_url(self.url, relpath)

    async def _blocking(self, function: Callable[..., _R], *args: Any) -> _R:
        """Run blocking file work on the server's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    # -- connection handling ---------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # start_server runs every connection in a task of its own
        peername = writer.get_extra_info("peername")
        address = str(peername[0]) if isinstance(peername, tuple) else str(peername)
        peer = f"{address}:{peername[1]}" if isinstance(peername, tuple) else address
        if not self._admit(task, address):
            # No reading, no waiting on the peer: a short answer into the socket buffer, then close.
            with contextlib.suppress(Exception):
                writer.write(_BUSY)
                writer.close()
            return
        try:
            await self._serve_one(reader, writer, peer, task)
        except (ConnectionError, TimeoutError) as exc:
            log.info("data server: %s went away (%s)", peer, exc or type(exc).__name__)
        except Exception:
            log.exception("data server: unexpected error serving %s", peer)
        finally:
            self._connections.discard(task)
            self._awaiting_head.pop(task, None)
            self._per_peer[address] -= 1
            if self._per_peer[address] <= 0:
                del self._per_peer[address]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _admit(self, task: asyncio.Task[None], address: str) -> bool:
        """Count a new connection in, or say it must be refused (the peer, or the server, is full)."""
        if self._per_peer[address] >= self.max_connections_per_peer:
            self._counters["refused_peer_full"] += 1
            log.debug("data server: %s already has %d connections; refused", address, self._per_peer[address])
            return False
        if len(self._connections) >= self.max_connections:
            victim = next(iter(self._awaiting_head), None)
            if victim is None:  # every connection carries a request: the newcomer gets a 503, retries later
                self._counters["refused_server_full"] += 1
                return False
            # A connection that has not sent its head yet has cost us nothing to give up; a client that
            # means it sends its head at once, so the oldest such connection is the likeliest idler.
            del self._awaiting_head[victim]
            victim.cancel()
            self._counters["dropped_awaiting_head"] += 1
        self._connections.add(task)
        self._awaiting_head[task] = None
        self._per_peer[address] += 1
        return True

    async def _serve_one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str, task: asyncio.Task[None]
    ) -> None:
        request: Request | None = None
        try:
            try:
                async with asyncio.timeout(self.head_timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    log.info("data server: bad request from %s: connection closed inside the head", peer)
                return
            except asyncio.LimitOverrunError:
                raise HttpError(431, f"request head over {MAX_HEAD_BYTES} bytes") from None
            except TimeoutError:
                self._counters["head_timeout"] += 1
                raise HttpError(408, f"no complete request head within {self.head_timeout:g}s") from None
            finally:
                self._awaiting_head.pop(task, None)
            request = parse_head(head, peer)
            status = await self._dispatch(request, reader, writer)
            log.debug("data server: %s %s %s -> %d", peer, request.method, request.target, status)
        except HttpError as err:
            what = f"{request.method} {request.target[:200]}" if request else "request"
            # Refusals of unauthenticated requests are counted, not each logged loudly: anyone can cause them.
            level = logging.WARNING if request is not None and request.authenticated else logging.INFO
            log.log(level, "data server: %s from %s refused: %d %s", what, peer, err.status, err)
            await reply_error(writer, err)
            if request is not None and request.body_left:
                if request.authenticated:
                    await linger(reader, request.body_left)
                else:
                    await linger(reader, request.body_left, ANONYMOUS_LINGER_S, ANONYMOUS_LINGER_BYTES)
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
        with contextlib.suppress(HttpError):  # a refusal lingers over the body it announced, if any
            request.body_left = content_length(request)
        if request.method not in ("GET", "PUT", "DELETE"):
            allow = {"Allow": "GET, PUT, DELETE"}
            raise HttpError(405, f"method {request.method[:20]} not allowed", headers=allow)
        parts = parse_path(request.target)
        job = self._authorize(request, parts)
        if request.method == "GET":
            return await self._get(request, parts, job, writer)
        if request.method == "PUT":
            return await self._put(request, parts, job, reader, writer)
        return await self._delete(request, parts, job, writer)

    # -- access ----------------------------------------------------------------------------------------

    def _job_of(self, parts: tuple[str, ...]) -> str:
        """The job whose data `parts` names."""
        if self.job is not None:
            return self.job
        if len(parts) >= 2 and parts[0] == JOBS_DIR:
            return parts[1]
        raise HttpError(403, f"only job data (/f/{JOBS_DIR}/<job id>/...) is served")

    def _authorize(self, request: Request, parts: tuple[str, ...]) -> str:
        """The job `parts` belongs to, if the request's token opens it; else a 401 or 403."""
        try:
            job = self._job_of(parts)
        except HttpError:
            self._counters["refused_not_job_data"] += 1
            raise
        try:
            token = bearer_token(request.headers)
        except HttpError:
            self._counters["refused_no_token"] += 1
            raise
        if not self.capabilities.accepts(job, token):
            self._counters["refused_bad_token"] += 1
            raise HttpError(403, f"the token presented does not open job {job}'s data")
        request.authenticated = True
        return job

    # -- paths -----------------------------------------------------------------------------------------

    def _scope(self, job: str) -> Path:
        """The directory a job's paths must stay inside."""
        return self.root if self.job is not None else self.root / JOBS_DIR / job

    def _resolve(self, parts: tuple[str, ...], job: str) -> Path:
        """The path of `parts` with symlinks resolved, which must lie strictly inside the job's directory."""
        scope = self._scope(job)
        resolved = self.root.joinpath(*parts).resolve()
        if resolved == scope or not resolved.is_relative_to(scope):
            raise HttpError(403, "path leaves the job's directory")
        return resolved

    def _local(self, parts: tuple[str, ...], job: str) -> Path:
        """Where a GET of `parts` reads: a published file, or a path inside the job's directory."""
        return self._aliases.get("/".join(parts)) or self._resolve(parts, job)

    def _refuse_alias(self, parts: tuple[str, ...]) -> None:
        if "/".join(parts) in self._aliases:
            raise HttpError(403, "a published file is read-only")

    # -- GET -------------------------------------------------------------------------------------------

    def _open_for_read(self, parts: tuple[str, ...], job: str) -> int:
        """A descriptor of what a GET of `parts` reads. A published file is the owner's own; anything else
        lies inside the job's directory, where task code writes, so it is opened beneath the data root
        without following a link at any component (a check-then-open could be raced by a planted link)."""
        flags = os.O_RDONLY | NONBLOCK | getattr(os, "O_BINARY", 0)
        alias = self._aliases.get("/".join(parts))
        if alias is not None:
            return os.open(alias, flags)
        self._resolve(parts, job)  # the lexical scope check, with its clear refusal
        root_fd = os.open(self.root, os.O_RDONLY | DIRECTORY | CLOEXEC)
        try:
            return open_beneath(root_fd, list(parts), flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise HttpError(403, "path leaves the job's directory") from None
            raise
        finally:
            os.close(root_fd)

    async def _get(
        self, request: Request, parts: tuple[str, ...], job: str, writer: asyncio.StreamWriter
    ) -> int:
        try:
            fd = self._open_for_read(parts, job)
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
                    headers[CHECKSUM_HEADER] = await self._sums.checksum(fd, info, start, length)
                headers |= {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(length),
                    "Accept-Ranges": "bytes",
                }
                request.answer(writer, status, headers)
                await send_file_range(writer, file, start, length, self._blocking)
        return status

    # -- PUT -------------------------------------------------------------------------------------------

    async def _put(
        self,
        request: Request,
        parts: tuple[str, ...],
        job: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> int:
        length = content_length(request)
        request.body_left = length
        if not self.allow_upload:
            raise HttpError(403, "uploads are disabled on this node")
        relpath = "/".join(parts)
        self._refuse_alias(parts)
        if self._upload_names is not None and relpath not in self._upload_names:
            raise HttpError(403, f"{relpath} is not an output this server expects")
        self._budget.check(job, relpath, length)
        claimed = claimed_checksum(request)
        path = self._resolve(parts, job)
        if path.is_dir():
            raise HttpError(409, "a directory has that name")
        created = make_parents(path, self.root)
        self._budget.hold(job, length)
        try:
            async with self._slots:
                if request.headers.get("expect", "").lower() == "100-continue":  # curl asks, then waits
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                info, digest = await store(
                    request, reader, writer.transport, path, claimed, self._blocking, self._counters
                )
        except BaseException:
            self._budget.release(job, length)
            remove_made(created)  # a refused upload leaves nothing behind, not even its directories
            raise
        self._budget.stored(job, relpath, length)
        self._sums.remember_file(info, digest)
        request.answer(writer, 201, {"Content-Length": "0", CHECKSUM_HEADER: digest})
        await writer.drain()
        return 201

    # -- DELETE ----------------------------------------------------------------------------------------

    async def _delete(
        self, request: Request, parts: tuple[str, ...], job: str, writer: asyncio.StreamWriter
    ) -> int:
        if not self.allow_delete:
            raise HttpError(403, "deletes are disabled on this node")
        # Check the parent with symlinks resolved, but act on the name itself: deleting a symlink removes
        # the link, never what it points to. A node's job directory itself may go (the job's cleanup).
        self._refuse_alias(parts)
        scope = self._scope(job)
        candidate = self.root.joinpath(*parts)
        parent = candidate.parent.resolve()
        inside = parent == scope.parent if candidate == scope else parent.is_relative_to(scope)
        if not inside:
            raise HttpError(403, "path leaves the job's directory")
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


def _relpath(relpath: str) -> str:
    """`relpath` checked as a request's path would be, in its canonical form."""
    return "/".join(checked_parts(relpath))
