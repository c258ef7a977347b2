"""What the HTTP API asks of the node: the `ApiBackend` protocol and the refusals it may raise.

The application (`app.py`) parses, limits and authorises a request, then calls one method here; the node
implements them (its state, its history store, its messages to the coordinator). Bodies in and out are
plain JSON-able dicts in seed 004's camelCase shapes. A backend refuses with an exception:

* `swarm.errors.InvalidSpec` (and subclasses) -> 400; a `path` attribute names the field;
* `NotFound` -> 404, `Forbidden` -> 403, `Conflict` -> 409;

anything else is a bug: the application answers 500 with an id and logs the traceback.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from swarm.api.auth import ApiUser
from swarm.errors import InvalidSpec, LocalError

__all__ = ["ApiBackend", "Conflict", "Forbidden", "Json", "NotFound", "iso_time"]

#: A JSON object as the API sends and receives it.
Json = dict[str, Any]


def iso_time(when: float) -> str:
    """A time as the API writes it (RFC 3339, UTC, whole seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


class NotFound(InvalidSpec):
    """What the request names does not exist (404). `path` optionally names the field that named it."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class Conflict(InvalidSpec):
    """The request contradicts the current state, e.g. a version redefined with another body (409)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class Forbidden(LocalError):
    """The caller is authenticated but may not do this to this object, e.g. cancel another's run (403)."""


class ApiBackend(Protocol):
    """The node's side of the API (see the module doc). Every `user` is the authenticated caller."""

    async def define_dag(self, body: Json, user: ApiUser) -> Json:
        """Define (or re-define) a DAG version from seed 004's define body; the 201 response body."""
        ...

    async def list_dags(self) -> list[Json]:
        """A summary of every DAG."""
        ...

    async def get_dag(self, dag_id: str, version: str | None) -> Json | None:
        """A DAG's definition at `version` (None: the latest), or None when there is none."""
        ...

    async def dag_versions(self, dag_id: str) -> list[Json]:
        """Every version of a DAG, oldest first."""
        ...

    async def start_run(self, dag_id: str, body: Json, user: ApiUser) -> Json:
        """Start a run: body `{"params": {...}, "version"?: str, "runId"?: str}`; the run object."""
        ...

    async def get_run(self, run_id: str) -> Json | None:
        """A run with its nodes' states, or None."""
        ...

    async def list_runs(self, dag_id: str | None, limit: int, state: str | None) -> list[Json]:
        """The newest `limit` runs, optionally of one DAG and in one state."""
        ...

    async def cancel_run(self, run_id: str, user: ApiUser) -> Json:
        """Cancel a run (its owner, or a principal with `cancel_any`); the run object."""
        ...

    async def modify_run(self, run_id: str, body: Json, user: ApiUser) -> Json:
        """Change a live run: body `{"skip": [nodeId], "add": {"nodes": [...], "edges": [...]}}`."""
        ...

    async def allocate(self, body: Json, user: ApiUser) -> Json:
        """Seed 004's `POST /api/v1/resources/allocate`; its response body."""
        ...

    async def history(self, dag_id: str, limit: int) -> Json:
        """The newest `limit` runs of a DAG from the history store, with per-node executions."""
        ...

    async def analytics(self, dag_id: str) -> Json:
        """Aggregates over a DAG's history (durations, failure rates, bottlenecks)."""
        ...

    async def list_artifacts(self) -> list[Json]:
        """Every artifact's metadata."""
        ...

    async def get_artifact(self, name: str, version: str | None) -> Json | None:
        """An artifact's metadata at `version` (None: every version), or None."""
        ...

    async def artifact_source(self, name: str, version: str) -> tuple[str, bytes] | None:
        """An artifact's file name and bytes, for the read-only code viewer, or None."""
        ...

    async def push_artifact(
        self, name: str, version: str, kind: str, filename: str, data: bytes, user: ApiUser
    ) -> Json:
        """Store an artifact (kind python, shell or jar); its metadata."""
        ...

    async def list_standards(self) -> list[Json]:
        """Every task standard (a reusable, named task definition)."""
        ...

    async def define_standard(self, body: Json, user: ApiUser) -> Json:
        """Define a task standard; the stored standard."""
        ...

    async def devices(self) -> list[Json]:
        """Every member device with its capacity and state."""
        ...

    def status(self) -> Json:
        """This node's view of the cluster: members, coordinator, epoch."""
        ...

    def subscribe(self) -> AsyncIterator[Json]:
        """Events for the stream, each with a "type" key; closed (aclose) when the client goes."""
        ...
