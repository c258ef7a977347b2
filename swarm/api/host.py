"""The HTTP API inside a node process: the aiohttp server, the workflow service and their feed.

The node shell owns the broker connection; this host asks it for three things only (sign and publish,
subscribe, read the membership) and is handed every verified message on the service's topics, which a
queue of its own feeds to the service, so history writes never hold up the node's receive loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from aiohttp import web

from swarm import topics
from swarm.api.app import close, make_app, serve
from swarm.api.auth import TokenVerifier
from swarm.api.backend import Json
from swarm.api.history import History
from swarm.api.service import NodePort, WorkflowService
from swarm.cockpit import STATIC_DIR
from swarm.config import parse_listen
from swarm.durable import write_private
from swarm.messages import Envelope
from swarm.plugins.step_runtime import ARTIFACT_SCOPE
from swarm.runtime.artifacts import ArtifactStore
from swarm.runtime.datafetch import file_url
from swarm.runtime.dataserver import DataServer

__all__ = ["ApiHost", "BlobServer", "status_of"]

log = logging.getLogger(__name__)

#: Messages waiting for the workflow service; past this a record is dropped with a warning.
_FEED_LIMIT = 10_000
#: How often the acting coordinator's node looks for due scheduled runs.
SCHEDULE_TICK_S = 1.0
#: Every this many schedule ticks (an hour), and at start, the history is pruned.
RETENTION_EVERY = 3600


class ApiHost:
    """Serves the API of one node while it runs (an async context manager)."""

    def __init__(
        self,
        port: NodePort,
        listen: str,
        data_dir: Path,
        blobs: BlobServer,
        verifier: TokenVerifier,
        clock: Callable[[], float],
        member_timeout: float,
    ) -> None:
        self._host, self._listen_port = parse_listen(listen)
        self._history = History(data_dir / "history.sqlite")
        self._blobs = blobs
        store = ArtifactStore(data_dir / "artifacts")
        self.service = WorkflowService(port, self._history, store, blobs.source, clock, member_timeout)
        self._verifier = verifier
        self._feed: asyncio.Queue[tuple[str, Envelope]] = asyncio.Queue(_FEED_LIMIT)
        self._followed: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._port = port
        self.url = ""

    async def __aenter__(self) -> ApiHost:
        await self._blobs.__aenter__()
        app = make_app(self.service, self._verifier, static_dir=STATIC_DIR)
        self._runner, port = await serve(app, self._host, self._listen_port)
        shown = "127.0.0.1" if self._host in ("0.0.0.0", "::") else self._host
        self.url = f"http://{shown}:{port}"
        self._consumer = asyncio.create_task(self._consume(), name="swarm.api.feed")
        self._scheduler = asyncio.create_task(self._every_second(), name="swarm.api.periodic")
        log.info("HTTP API at %s/api/v1", self.url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.service.catalog.stop_copying()
        for task in (self._consumer, self._scheduler):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._runner is not None:
            await close(self._runner)
        await self._blobs.__aexit__(exc_type, exc, tb)
        self._history.close()

    def on_connected(self) -> None:
        """A (new) broker connection: announce this node's artifacts, which a new broker does not know."""
        self.service.catalog.announce_all()

    def with_local_artifact(self, payload: Json) -> Json:
        """A step's payload with this node's own copy of its artifact, when it has one, as the first
        place to fetch it from: the member the artifact was pushed to may be gone."""
        meta = payload.get("artifact")
        own = self.service.catalog.local_source(str(meta.get("sha256"))) if isinstance(meta, dict) else None
        if own is None:
            return payload
        return {**payload, "sources": [own, *payload.get("sources", ())]}

    def subscriptions(self) -> list[str]:
        """Topics to subscribe to on (re)connect."""
        return [*topics.WORKFLOW_RECORDS, *sorted(self._followed)]

    def follow(self, followed: tuple[str, ...]) -> None:
        """Remember topics the service subscribed to, for the next connection."""
        self._followed.update(followed)

    def holds(self, topic: str) -> bool:
        """Whether the API subscribed to `topic` (the node's core must then not unsubscribe it)."""
        return topic in self._followed

    def release(self, released: tuple[str, ...]) -> None:
        """Forget topics the service no longer follows."""
        self._followed.difference_update(released)

    def offer(self, topic: str, env: Envelope) -> bool:
        """A verified message: queued for the service if it wants it. Returns whether the node's core
        should see it too (everything but the `wf/` records, which are the service's alone)."""
        if self.service.wants(topic):
            try:
                self._feed.put_nowait((topic, env))
            except asyncio.QueueFull:
                log.warning("workflow feed full: dropped a record on %s", topic)
        return not topic.startswith(topics.WORKFLOW_PREFIX)

    async def _every_second(self) -> None:
        """Every second: device events for the stream; scheduled runs, which only the acting
        coordinator's node starts (see `swarm.workflow.schedules`); and now and then the retention
        policies."""
        ticks = 0
        while True:
            await asyncio.sleep(SCHEDULE_TICK_S)
            ticks += 1
            try:
                self.service.members.watch()
                await self.service.members.forget_if_idle()
                if self._port.acting():
                    await self.service.schedules.fire_due()
                if ticks % RETENTION_EVERY == 1:
                    await self.service.apply_retention()
            except Exception:
                log.exception("scheduled runs or retention failed; trying again")

    async def _consume(self) -> None:
        while True:
            topic, env = await self._feed.get()
            try:
                await self.service.on_message(topic, env)
                if self._feed.empty():
                    await self.service.feed.flush()
            except Exception:
                log.exception("the workflow service failed on a message on %s; continuing", topic)


class BlobServer:
    """Serves the blobs of this node's artifact store to peers (read-only, under a capability token
    kept across restarts): a data server of its own, as the store lives outside the directory task code
    may write (`data/`), where the node's main data server serves job data."""

    def __init__(self, data_dir: Path, host: str, advertise_host: str | None) -> None:
        root = data_dir / "artifacts" / "blobs"
        root.mkdir(parents=True, exist_ok=True)
        token_file = data_dir / "artifacts" / "token"
        if not token_file.exists():
            write_private(token_file, secrets.token_urlsafe(24).encode())
        self._token = token_file.read_text().strip()
        self._server = DataServer(
            root,
            host=host,
            job=ARTIFACT_SCOPE,
            capabilities={ARTIFACT_SCOPE: self._token},
            advertise_host=advertise_host,
        )

    async def __aenter__(self) -> BlobServer:
        await self._server.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._server.__aexit__(exc_type, exc, tb)

    def source(self, sha256: str) -> dict[str, str]:
        """Where peers fetch a blob: its URL and the token to show."""
        return {"url": file_url(self._server.url, sha256), "token": self._token}


def status_of(node_id: str, coordinator: str | None, epoch: int, api: str) -> Json:
    """The `/api/v1/status` body."""
    return {"node": node_id, "coordinator": coordinator, "epoch": epoch, "api": api}
