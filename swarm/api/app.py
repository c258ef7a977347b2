"""The node's HTTP application: the JSON API under `/api/v1`, its event stream and the cockpit's files.

A handler is a thin shell: it checks the bearer token and the permission its route needs (`ROUTES`),
reads the body within a size limit, checks the envelope of the request (JSON object, ids in the path,
query parameters), calls one `ApiBackend` method and returns what it gives. It holds no protocol logic and
never evaluates what the user sent.

Every error is a JSON object `{"error": ..., "path"?: ...}`: 400 for bad input (`path` names the field or
parameter), 401 with `WWW-Authenticate: Bearer` for a missing or invalid token, 403 naming the missing
permission, 404 and 405 for unknown routes and methods, 409, 413 for bodies over the limit, and 500
`{"error": "internal error", "id": ...}` for a bug, logged with its traceback under the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractAccessLogger

from swarm.api.auth import ApiUser, TokenVerifier, Unauthenticated, permission_refusal
from swarm.api.backend import ApiBackend, Conflict, Forbidden, Json, NotFound
from swarm.api.openapi import build_openapi
from swarm.api.stream import pump
from swarm.errors import InvalidSpec
from swarm.ids import is_id
from swarm.trust.roles import Permission

__all__ = ["API_PREFIX", "MIB", "ROUTES", "close", "make_app", "serve"]

MIB = 1 << 20
API_PREFIX = "/api/v1"
ARTIFACT_KINDS = ("python", "shell", "jar", "mapreduce")
_MAX_LIMIT = 1000
_LIMIT_RE = re.compile(r"[0-9]{1,4}")
_STATE_RE = re.compile(r"[A-Za-z_]{1,32}")

_log = logging.getLogger(__name__)

#: (method, path, handler name, permission needed; None: public). The stream authenticates itself,
#: because it also takes its token from the query.
ROUTES: tuple[tuple[str, str, str, Permission | None], ...] = (
    ("POST", "/api/v1/dag/define", "define_dag", "submit"),
    ("GET", "/api/v1/dags", "list_dags", "view"),
    ("GET", "/api/v1/dags/{dagId}", "get_dag", "view"),
    ("GET", "/api/v1/dags/{dagId}/versions", "dag_versions", "view"),
    ("GET", "/api/v1/dags/{dagId}/versions/{version}", "dag_version", "view"),
    ("POST", "/api/v1/dags/{dagId}/runs", "start_run", "submit"),
    ("GET", "/api/v1/dags/{dagId}/history", "history", "view"),
    ("GET", "/api/v1/dags/{dagId}/analytics", "analytics", "view"),
    ("GET", "/api/v1/runs", "list_runs", "view"),
    ("GET", "/api/v1/runs/{runId}", "get_run", "view"),
    ("PATCH", "/api/v1/runs/{runId}", "modify_run", "submit"),
    ("POST", "/api/v1/runs/{runId}/cancel", "cancel_run", "submit"),
    ("POST", "/api/v1/resources/allocate", "allocate", "submit"),
    ("GET", "/api/v1/artifacts", "list_artifacts", "view"),
    ("GET", "/api/v1/artifacts/{name}", "get_artifact", "view"),
    ("GET", "/api/v1/artifacts/{name}/{version}", "get_artifact_version", "view"),
    ("PUT", "/api/v1/artifacts/{name}/{version}", "push_artifact", "run_code"),
    ("GET", "/api/v1/artifacts/{name}/{version}/source", "artifact_source", "view"),
    ("GET", "/api/v1/standards", "list_standards", "view"),
    ("POST", "/api/v1/standards", "define_standard", "submit"),
    ("GET", "/api/v1/devices", "devices", "view"),
    ("GET", "/api/v1/status", "status", "view"),
    ("GET", "/api/v1/openapi.json", "openapi", None),
)
_STREAM_PATH = "/api/v1/stream"

Handler = Callable[[web.Request, ApiUser | None], Awaitable[web.StreamResponse]]


class HttpError(Exception):
    """A refusal the application answers as JSON with `status`."""

    def __init__(
        self, status: int, message: str, path: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.path = path
        self.headers = headers or {}


def _unauthorised(reason: str, *, invalid: bool) -> HttpError:
    # RFC 6750: say `invalid_token` only when a token was sent.
    challenge = 'Bearer realm="swarm", error="invalid_token"' if invalid else 'Bearer realm="swarm"'
    return HttpError(401, reason, headers={"WWW-Authenticate": challenge})


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=_dumps)


def _error_body(message: str, path: str | None, **extra: str) -> Json:
    body: Json = {"error": message}
    if path:
        body["path"] = path
    body.update(extra)
    return body


def _refusal_status(exc: Exception) -> int:
    """The status of a backend's refusal (see `backend.py`)."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    return 403 if isinstance(exc, Forbidden) else 400


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _parse_object(data: bytes) -> Json:
    """The body as a JSON object; HttpError(400) naming the position or the type otherwise."""
    if not data.strip():
        raise HttpError(400, "the body is empty: expected a JSON object")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise HttpError(
            400, f"invalid JSON at line {exc.lineno} column {exc.colno} (byte {exc.pos}): {exc.msg}"
        ) from None
    if not isinstance(value, dict):
        raise HttpError(400, f"the body must be a JSON object, not {_json_type(value)}")
    return value


def _path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not is_id(value):
        raise HttpError(400, f"{name}: {value[:60]!r} is not a valid id", name)
    return value


def _limit(request: web.Request, default: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not _LIMIT_RE.fullmatch(raw) or not 1 <= int(raw) <= _MAX_LIMIT:
        raise HttpError(400, f"limit: expected an integer from 1 to {_MAX_LIMIT}, got {raw[:20]!r}", "limit")
    return int(raw)


async def _read_limited(request: web.Request, limit: int, what: str) -> bytes:
    """The body, refusing (413) one longer than `limit` before reading it when its length is declared, and
    as soon as it passes the limit when it is not (chunked)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise HttpError(413, f"{what} of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > limit:
            raise HttpError(413, f"{what} exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _bearer(request: web.Request, *, allow_query: bool) -> str:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorised("the Authorization header must be 'Bearer <token>'", invalid=True)
        return token.strip()
    if allow_query and request.query.get("token"):
        return request.query["token"]
    raise _unauthorised("missing bearer token: send 'Authorization: Bearer <token>'", invalid=False)


class _Api:
    """The handlers of one application, bound to its backend, verifier and limits."""

    def __init__(
        self,
        backend: ApiBackend,
        verifier: TokenVerifier,
        *,
        max_body_bytes: int,
        max_artifact_bytes: int,
        stream_max_queued: int,
        stream_grace: float,
        rng: random.Random,
    ) -> None:
        self.backend = backend
        self.verifier = verifier
        self.max_body = max_body_bytes
        self.max_artifact = max_artifact_bytes
        self.stream_max_queued = stream_max_queued
        self.stream_grace = stream_grace
        self.rng = rng
        self.sockets: set[web.WebSocketResponse] = set()
        self.openapi_doc = orjson.dumps(build_openapi())

    # --- the shell around every handler ------------------------------------------------------------

    def authorise(self, token: str, permission: Permission) -> ApiUser:
        """The user `token` authenticates, if it has `permission`; HttpError 401/403 otherwise."""
        try:
            user = self.verifier.authenticate(token)
        except Unauthenticated as exc:
            raise _unauthorised(str(exc), invalid=True) from None
        refusal = permission_refusal(user, permission)
        if refusal is not None:
            raise HttpError(403, refusal)
        return user

    def guarded(self, permission: Permission | None, handler: Handler) -> Callable[[web.Request], Any]:
        """`handler`, called with the authorised user (None for a public route)."""

        async def run(request: web.Request) -> web.StreamResponse:
            user = None
            if permission is not None:
                user = self.authorise(_bearer(request, allow_query=False), permission)
            return await handler(request, user)

        return run

    @web.middleware
    async def errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Turn every refusal and failure into a JSON error response."""
        try:
            return await handler(request)
        except HttpError as exc:
            return web.json_response(
                _error_body(exc.message, exc.path), status=exc.status, headers=exc.headers, dumps=_dumps
            )
        except (Forbidden, InvalidSpec) as exc:
            path = getattr(exc, "path", None)
            return _json(_error_body(str(exc), path if isinstance(path, str) else None), _refusal_status(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return self._http_error(request, exc)
        except Exception:
            error_id = f"{self.rng.getrandbits(32):08x}"
            _log.exception("API %s %s failed (error id %s)", request.method, request.path, error_id)
            return _json(_error_body("internal error", None, id=error_id), 500)

    @staticmethod
    def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")
        }
        if exc.status == 404:
            message = f"no such resource: {request.method} {request.path}"
        elif exc.status == 405:
            allowed = headers.get("Allow", "")
            message = f"method {request.method} is not allowed on {request.path} (allowed: {allowed})"
        elif exc.status == 413:
            message = f"the body exceeds the limit: {exc.text or exc.reason}"
        else:
            message = exc.reason
        return web.json_response(_error_body(message, None), status=exc.status, headers=headers, dumps=_dumps)

    async def body(self, request: web.Request) -> Json:
        """The request's JSON object, within the body limit."""
        return _parse_object(await _read_limited(request, self.max_body, "the body"))

    # --- DAGs --------------------------------------------------------------------------------------

    async def define_dag(self, request: web.Request, user: ApiUser | None) -> web.Response:
        assert user is not None
        return _json(await self.backend.define_dag(await self.body(request), user), 201)

    async def list_dags(self, request: web.Request, user: ApiUser | None) -> web.Response:
        dags = await self.backend.list_dags()
        return _json({"dags": dags, "totalEntries": len(dags)})

    async def get_dag(self, request: web.Request, user: ApiUser | None) -> web.Response:
        dag_id = _path_id(request, "dagId")
        dag = await self.backend.get_dag(dag_id, None)
        if dag is None:
            raise HttpError(404, f"no DAG {dag_id!r}", "dagId")
        return _json(dag)

    async def dag_versions(self, request: web.Request, user: ApiUser | None) -> web.Response:
        versions = await self.backend.dag_versions(_path_id(request, "dagId"))
        return _json({"versions": versions, "totalEntries": len(versions)})

    async def dag_version(self, request: web.Request, user: ApiUser | None) -> web.Response:
        dag_id, version = _path_id(request, "dagId"), _path_id(request, "version")
        dag = await self.backend.get_dag(dag_id, version)
        if dag is None:
            raise HttpError(404, f"no version {version!r} of DAG {dag_id!r}", "version")
        return _json(dag)

    async def history(self, request: web.Request, user: ApiUser | None) -> web.Response:
        return _json(await self.backend.history(_path_id(request, "dagId"), _limit(request, 20)))

    async def analytics(self, request: web.Request, user: ApiUser | None) -> web.Response:
        return _json(await self.backend.analytics(_path_id(request, "dagId")))

    # --- runs --------------------------------------------------------------------------------------

    async def start_run(self, request: web.Request, user: ApiUser | None) -> web.Response:
        assert user is not None
        dag_id = _path_id(request, "dagId")
        body = await self.body(request)
        if not isinstance(body.get("params", {}), dict):
            raise HttpError(400, f"params: expected an object, got {_json_type(body['params'])}", "params")
        if not isinstance(body.get("version", ""), str):
            raise HttpError(400, f"version: expected a string, got {_json_type(body['version'])}", "version")
        run_id = body.get("runId")
        if run_id is not None and not (isinstance(run_id, str) and is_id(run_id)):
            raise HttpError(400, f"runId: {str(run_id)[:60]!r} is not a valid id", "runId")
        return _json(await self.backend.start_run(dag_id, body, user), 202)

    async def list_runs(self, request: web.Request, user: ApiUser | None) -> web.Response:
        dag_id = request.query.get("dagId")
        if dag_id is not None and not is_id(dag_id):
            raise HttpError(400, f"dagId: {dag_id[:60]!r} is not a valid id", "dagId")
        state = request.query.get("state")
        if state is not None and not _STATE_RE.fullmatch(state):
            raise HttpError(400, f"state: expected a state name like RUNNING, got {state[:40]!r}", "state")
        runs = await self.backend.list_runs(dag_id, _limit(request, 100), state)
        return _json({"runs": runs, "totalEntries": len(runs)})

    async def get_run(self, request: web.Request, user: ApiUser | None) -> web.Response:
        run_id = _path_id(request, "runId")
        run = await self.backend.get_run(run_id)
        if run is None:
            raise HttpError(404, f"no run {run_id!r}", "runId")
        return _json(run)

    async def cancel_run(self, request: web.Request, user: ApiUser | None) -> web.Response:
        assert user is not None
        return _json(await self.backend.cancel_run(_path_id(request, "runId"), user))

    async def modify_run(self, request: web.Request, user: ApiUser | None) -> web.Response:
        assert user is not None
        run_id = _path_id(request, "runId")
        body = await self.body(request)
        if "skip" not in body and "add" not in body:
            raise HttpError(400, "nothing to change: give 'skip' (node ids) and/or 'add' (nodes and edges)")
        skip = body.get("skip", [])
        if not isinstance(skip, list):
            raise HttpError(400, f"skip: expected an array of node ids, got {_json_type(skip)}", "skip")
        for i, node_id in enumerate(skip):
            if not (isinstance(node_id, str) and is_id(node_id)):
                raise HttpError(400, f"skip[{i}]: {str(node_id)[:60]!r} is not a valid node id", f"skip[{i}]")
        if not isinstance(body.get("add", {}), dict):
            raise HttpError(400, f"add: expected an object, got {_json_type(body['add'])}", "add")
        return _json(await self.backend.modify_run(run_id, body, user))

    async def allocate(self, request: web.Request, user: ApiUser | None) -> web.Response:
        assert user is not None
        # Seed 004 answers the allocation with 200 (the define endpoint's 201 is the exception).
        return _json(await self.backend.allocate(await self.body(request), user))

    # --- artifacts and standards -------------------------------------------------------------------

    async def list_artifacts(self, request: web.Request, user: ApiUser | None) -> web.Response:
        items = await self.backend.list_artifacts()
        return _json({"artifacts": items, "totalEntries": len(items)})

    async def get_artifact(self, request: web.Request, user: ApiUser | None) -> web.Response:
        name = _path_id(request, "name")
        found = await self.backend.get_artifact(name, None)
        if found is None:
            raise HttpError(404, f"no artifact {name!r}", "name")
        return _json(found)

    async def get_artifact_version(self, request: web.Request, user: ApiUser | None) -> web.Response:
        name, version = _path_id(request, "name"), _path_id(request, "version")
        found = await self.backend.get_artifact(name, version)
        if found is None:
            raise HttpError(404, f"no version {version!r} of artifact {name!r}", "version")
        return _json(found)

    async def artifact_source(self, request: web.Request, user: ApiUser | None) -> web.Response:
        name, version = _path_id(request, "name"), _path_id(request, "version")
        found = await self.backend.artifact_source(name, version)
        if found is None:
            raise HttpError(404, f"no version {version!r} of artifact {name!r}", "version")
        filename, data = found
        try:
            data.decode("utf-8")
            content_type = "text/plain; charset=utf-8"
        except UnicodeDecodeError:
            content_type = "application/octet-stream"
        # User-supplied bytes on the cockpit's origin: never let a browser render them as a page.
        headers = {"Content-Type": content_type, "Content-Security-Policy": "sandbox; default-src 'none'"}
        if is_id(filename):
            headers["Content-Disposition"] = f'inline; filename="{filename}"'
        return web.Response(body=data, headers=headers)

    async def push_artifact(self, request: web.Request, user: ApiUser | None) -> web.Response:
        assert user is not None
        name, version = _path_id(request, "name"), _path_id(request, "version")
        kind = request.query.get("kind", "")
        if kind not in ARTIFACT_KINDS:
            raise HttpError(
                400, f"kind: expected one of {', '.join(ARTIFACT_KINDS)}, got {kind[:20]!r}", "kind"
            )
        filename = request.query.get("filename", "")
        if not is_id(filename):
            raise HttpError(
                400, f"filename: expected a plain file name like job.py, got {filename[:60]!r}", "filename"
            )
        data = await _read_limited(request, self.max_artifact, "the artifact")
        if not data:
            raise HttpError(400, "the artifact is empty")
        return _json(await self.backend.push_artifact(name, version, kind, filename, data, user), 201)

    async def list_standards(self, request: web.Request, user: ApiUser | None) -> web.Response:
        items = await self.backend.list_standards()
        return _json({"standards": items, "totalEntries": len(items)})

    async def define_standard(self, request: web.Request, user: ApiUser | None) -> web.Response:
        assert user is not None
        return _json(await self.backend.define_standard(await self.body(request), user), 201)

    # --- the cluster -------------------------------------------------------------------------------

    async def devices(self, request: web.Request, user: ApiUser | None) -> web.Response:
        items = await self.backend.devices()
        return _json({"devices": items, "totalEntries": len(items)})

    async def status(self, request: web.Request, user: ApiUser | None) -> web.Response:
        return _json(self.backend.status())

    async def openapi(self, request: web.Request, user: ApiUser | None) -> web.Response:
        return web.Response(body=self.openapi_doc, content_type="application/json")

    # --- the event stream --------------------------------------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """The WebSocket event stream (see `stream.py`); authorised before the upgrade."""
        token = _bearer(request, allow_query=True)
        self.authorise(token, "view")
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
        await ws.prepare(request)
        self.sockets.add(ws)
        incoming = asyncio.create_task(_discard_incoming(ws), name="api-stream-incoming")
        pumping = asyncio.create_task(
            pump(
                self.backend.subscribe(),
                ws.send_str,
                partial(self._close_socket, ws, request),
                still_allowed=lambda: self.verifier.verify(token) is not None,
                max_queued=self.stream_max_queued,
                grace=self.stream_grace,
            ),
            name="api-stream-pump",
        )
        try:
            await asyncio.wait({incoming, pumping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (incoming, pumping):
                task.cancel()
            await asyncio.gather(incoming, pumping, return_exceptions=True)
            self.sockets.discard(ws)
        if pumping.done() and not pumping.cancelled() and pumping.exception() is not None:
            _log.error("event stream failed", exc_info=pumping.exception())
        await self._close_socket(ws, request, 1000, "")
        return ws

    async def _close_socket(
        self, ws: web.WebSocketResponse, request: web.Request, code: int, why: str
    ) -> None:
        if ws.closed:
            return
        try:
            await asyncio.wait_for(ws.close(code=code, message=why.encode()), timeout=self.stream_grace)
        except (TimeoutError, ConnectionError):
            # A client that does not read cannot take a close frame either: drop the connection.
            if request.transport is not None:
                request.transport.abort()

    async def close_sockets(self, app: web.Application) -> None:
        """On shutdown: close every open stream with 1001 (going away)."""
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1001, message=b"node shutting down"), timeout=1.0)


async def _discard_incoming(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends, so pings and its close frame are processed."""
    async for msg in ws:
        if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            return


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith(API_PREFIX):
        response.headers.setdefault("Cache-Control", "no-store")


def make_app(
    backend: ApiBackend,
    verifier: TokenVerifier,
    *,
    max_body_bytes: int = 4 * MIB,
    max_artifact_bytes: int = 64 * MIB,
    static_dir: Path | None = None,
    stream_max_queued: int = 256,
    stream_grace: float = 2.0,
    rng: random.Random | None = None,
) -> web.Application:
    """The node's application: every route of `ROUTES`, the stream, and `static_dir`'s files under `/`.

    `stream_max_queued` frames may wait for a slow stream client, for `stream_grace` seconds, before it
    is dropped; `rng` makes the ids of 500 errors (a fresh `random.Random` when None).
    """
    api = _Api(
        backend,
        verifier,
        max_body_bytes=max_body_bytes,
        max_artifact_bytes=max_artifact_bytes,
        stream_max_queued=stream_max_queued,
        stream_grace=stream_grace,
        rng=rng or random.Random(),
    )
    # aiohttp's own cap backs up `_read_limited`, for anything that reads the body another way.
    app = web.Application(middlewares=[api.errors], client_max_size=max(max_body_bytes, max_artifact_bytes))
    for method, path, name, permission in ROUTES:
        app.router.add_route(method, path, api.guarded(permission, getattr(api, name)), name=name)
    app.router.add_get(_STREAM_PATH, api.stream, name="stream")
    if static_dir is not None:
        _add_static(app, static_dir)
    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(api.close_sockets)
    return app


def _add_static(app: web.Application, static_dir: Path) -> None:
    """Serve the files under `static_dir` (`/` is its index.html): no listings, no dotfiles, nothing
    outside it (symbolic links included), and 404s as JSON like the API's."""
    root = static_dir.resolve()

    async def static(request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"] or "index.html"
        parts = tail.split("/")
        if request.path.startswith(API_PREFIX + "/") or any(p.startswith(".") or not p for p in parts):
            raise web.HTTPNotFound()
        target = root.joinpath(*parts).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(target)

    app.router.add_get("/{tail:.*}", static, name="static")


class _PathOnlyAccessLogger(AbstractAccessLogger):
    """An access log without query strings: the stream's `?token=` must never reach a log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %.3fs', request.remote, request.method, request.path, response.status, time
        )


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving `app` on `host:port` (0: any free port); the runner and the port bound."""
    runner = web.AppRunner(app, access_log_class=_PathOnlyAccessLogger, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    address = runner.addresses[0]
    return runner, int(address[1])


async def close(runner: web.AppRunner) -> None:
    """Stop serving: close open streams, finish requests in flight, free the port."""
    await runner.cleanup()
