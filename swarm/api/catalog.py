"""What steps reference: artifacts (their bytes on the node that took them) and task standards.

An artifact's bytes stay on the node that took them, in its artifact store inside its data-plane
directory; its record on `wf/artifact/<name>/<version>` tells peers where to fetch it, and every node
learns the cluster's artifacts from those records. Task standards are stored in this node's history and
published on `wf/standard/<name>/<version>`, which every other node stores too; versions are immutable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

from swarm import topics
from swarm.api.auth import ApiUser
from swarm.api.backend import Conflict, Json
from swarm.api.history import History
from swarm.errors import InvalidSpec
from swarm.messages import ArtifactPublished, Body, StandardDefined
from swarm.runtime.artifacts import (
    ArtifactError,
    ArtifactKind,
    ArtifactMeta,
    ArtifactStore,
    artifact_id,
    parse_artifact_ref,
    version_key,
)
from swarm.workflow.compile import ArtifactRef
from swarm.workflow.fields import DefinitionError
from swarm.workflow.mrstep import app_problem
from swarm.workflow.standards import TaskStandard, parse_standard

__all__ = ["COPY_MAX_BYTES", "Catalog", "Publisher"]

log = logging.getLogger(__name__)

_KINDS = ("python", "shell", "jar", "mapreduce")
#: A peer's artifact up to this size is copied to every node that learns of it (code, scripts, jars).
COPY_MAX_BYTES = 64 * 1024 * 1024


class Publisher(Protocol):
    """What the catalog needs of its node: to publish signed records."""

    def publish(self, topic: str, body: Body, retain: bool = False) -> None:
        """Sign and send a message."""
        ...


class Catalog:
    """The cluster's artifacts as their records tell them, this node's artifact store, and the standards."""

    def __init__(
        self,
        node: Publisher,
        history: History,
        store: ArtifactStore,
        source_of: Callable[[str], dict[str, str]],
        clock: Callable[[], float],
    ) -> None:
        self._node = node
        self._history = history
        self.store = store
        # Where peers fetch a blob of this node's store (URL and capability token) by its SHA-256.
        self._source_of = source_of
        self._clock = clock
        self._artifacts: dict[tuple[str, str], ArtifactPublished] = {}
        self._copies: set[asyncio.Task[None]] = set()

    # --- artifacts ----------------------------------------------------------------------------------

    def on_published(self, record: ArtifactPublished) -> None:
        """An artifact's record (this node's or a peer's). A peer's is copied here in the background, so
        that the artifact outlives the member it was pushed to and this node's steps find it at home."""
        meta = ArtifactMeta.from_json(record.meta)
        self._artifacts[(meta.name, meta.version)] = record
        if meta.size <= COPY_MAX_BYTES and not self.store.has_blob(meta.sha256):
            copy = asyncio.get_running_loop().create_task(self._copy(meta, record.sources))
            self._copies.add(copy)
            copy.add_done_callback(self._copies.discard)

    async def _copy(self, meta: ArtifactMeta, sources: tuple[dict[str, str], ...]) -> None:
        try:
            await asyncio.to_thread(self.store.copy_from, meta, sources)
        except (ArtifactError, OSError) as exc:
            # Not fatal: a step that needs it fetches it from its holder then, as without the copy.
            log.info("no copy of artifact %s here yet: %s", meta.artifact_id, exc)

    def stop_copying(self) -> None:
        """Cancel the copies still under way (the node is stopping)."""
        for copy in self._copies:
            copy.cancel()

    def local_source(self, sha256: str) -> dict[str, str] | None:
        """Where this node serves a blob it holds (`{url, token}`), None when it has none."""
        return self._source_of(sha256) if self.store.has_blob(sha256) else None

    def resolve(self, ref: str) -> ArtifactRef:
        """The artifact a step names (`name@version`, `name-vX.Y`, or a bare name: its newest version)."""
        name, version = parse_artifact_ref(ref)
        candidates = [v for (n, v) in self._artifacts if n == name and (version is None or v == version)]
        if not candidates:
            raise DefinitionError("taskDefinition.artifactId", f"no artifact {ref!r} in the cluster")
        best = max(candidates, key=version_key)
        record = self._artifacts[(name, best)]
        return ArtifactRef(dict(record.meta), tuple(record.sources))

    def artifact_meta(self, ref: str) -> dict[str, Any] | None:
        """The metadata of the artifact `ref` names, None when the cluster has none such."""
        try:
            return self.resolve(ref).meta
        except (InvalidSpec, ValueError):
            return None

    async def push_artifact(
        self, name: str, version: str, kind: str, filename: str, data: bytes, user: ApiUser
    ) -> Json:
        """Keep the bytes here and tell the cluster where to fetch them."""
        if kind not in _KINDS:
            raise InvalidSpec(f"kind: expected one of {', '.join(_KINDS)}, got {kind!r}")
        if kind == "mapreduce":
            _check_app(filename, data)
        now = self._clock()
        put = self.store.put
        meta = await asyncio.to_thread(
            put, name, version, cast(ArtifactKind, kind), filename, data, now, user.id
        )
        self.announce(meta)
        return {**meta.to_json(), "artifactId": artifact_id(name, version)}

    def announce(self, meta: ArtifactMeta) -> None:
        """Tell the cluster that this node serves `meta` (again after a restart: its port may differ)."""
        record = ArtifactPublished(meta.to_json(), (self._source_of(meta.sha256),))
        self._artifacts[(meta.name, meta.version)] = record
        self._node.publish(topics.workflow_artifact(meta.name, meta.version), record, retain=True)

    def announce_all(self) -> None:
        """Announce every artifact this node holds (on every connection: a new broker knows none)."""
        for meta in self.store.list():
            self.announce(meta)

    async def list_artifacts(self) -> list[Json]:
        """Every artifact the cluster knows, newest version first per name."""
        metas = [ArtifactMeta.from_json(r.meta) for r in self._artifacts.values()]
        metas.sort(key=lambda m: (m.name, version_key(m.version)), reverse=True)
        return [{**m.to_json(), "artifactId": m.artifact_id} for m in metas]

    async def get_artifact(self, name: str, version: str | None) -> Json | None:
        """One version's metadata, or every version's."""
        found = [a for a in await self.list_artifacts() if a["name"] == name]
        if version is None:
            return {"name": name, "versions": found} if found else None
        return next((a for a in found if a["version"] == version), None)

    async def artifact_source(self, name: str, version: str) -> tuple[str, bytes] | None:
        """The bytes of an artifact this node holds (the code viewer reads them)."""
        meta = self.store.get(name, version)
        if meta is None:
            return None
        return meta.filename, await asyncio.to_thread(self.store.blob_path(meta.sha256).read_bytes)

    # --- task standards -----------------------------------------------------------------------------

    async def list_standards(self) -> list[Json]:
        """Every task standard version."""
        return await asyncio.to_thread(self._history.standards)

    async def define_standard(self, body: Json, user: ApiUser) -> Json:
        """Store a task standard version and publish it; versions are immutable."""
        standard = parse_standard(body)
        known = await self.standards()
        if standard.key in known and known[standard.key].to_json() != standard.to_json():
            raise Conflict(
                f"standard {standard.key} exists with another body; define a new version", "version"
            )
        record = StandardDefined(standard.name, standard.version, standard.to_json(), self._clock(), user.id)
        self._node.publish(topics.workflow_standard(standard.name, standard.version), record, retain=True)
        await asyncio.to_thread(self.store_standard, record)
        return {**standard.to_json(), "key": standard.key}

    def store_standard(self, body: StandardDefined) -> None:
        """Keep a standard's record in the history (blocking: run it in a thread)."""
        self._history.put_standard(body.name, body.version, body.standard, body.created_at, body.created_by)

    async def standards(self) -> dict[str, TaskStandard]:
        """Every standard by its key (name@version)."""
        rows = await asyncio.to_thread(self._history.standards)
        parsed = (parse_standard(row["standard"]) for row in rows)
        return {s.key: s for s in parsed}


def _check_app(filename: str, data: bytes) -> None:
    """A `mapreduce` artifact is one module defining an app (read, never run: `mrstep.app_problem`)."""
    if not filename.endswith(".py"):
        raise InvalidSpec(f"kind mapreduce: {filename!r} is not a module; an app is one .py file")
    try:
        problem = app_problem(data.decode("utf-8"))
    except UnicodeDecodeError:
        problem = "it is not UTF-8 text"
    if problem is not None:
        raise InvalidSpec(f"kind mapreduce: {filename} is not a MapReduce app: {problem}")
