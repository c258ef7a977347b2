"""What every workflow runtime shares: the step payload, its artifact, its outputs and its resource use.

A workflow step (`swarm.workflow.compile`) becomes a task whose payload is::

    {"run": run id, "step": node id, "shard": i, "shards": n,
     "entrypoint": "module:function" | "script.sh" | "com.example.Main",
     "artifact": {ArtifactMeta as JSON}, "sources": [{"url": ..., "token": ...}, ...],
     "params": {constant inputs}, "inputs": {filled in by the coordinator from upstream outputs}}

The artifact's bytes come peer to peer: from the data servers of the nodes that hold it (`sources`), each
copy checked against its SHA-256 before it is kept, and cached by hash in this node's artifact store,
so a node fetches a version once. A step's result is `{"outputs": {...}, "usage": {...}, "log": "..."}`:
the outputs feed downstream inputs (`swarm.workflow.gate`), usage and log go to the run's history.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from swarm.errors import Fatal, InvalidPayload, InvalidSpec, Retry
from swarm.plugins.step_data import spill_outputs
from swarm.runtime.artifacts import ArtifactMeta, ArtifactStore, ArtifactUnreachable
from swarm.runtime.jobaccess import JOBS_DIR
from swarm.taskapi import TaskContext

__all__ = [
    "ARTIFACT_SCOPE",
    "MAX_INLINE_OUTPUT",
    "Usage",
    "artifact_store",
    "check_step_payload",
    "fetch_artifact",
    "measured",
    "step_result",
    "store_root",
]

#: The data-plane directory (`<data>/mr/<scope>/`) of the node's artifact store, served to peers under
#: the store's own capability token. Not a valid job id for a submission (`swarm.core.jobs.check_job`).
ARTIFACT_SCOPE = "_artifacts"
#: Outputs larger than this, as JSON, after large values went to the data plane, fail the step: they
#: would travel through the broker in its commit.
MAX_INLINE_OUTPUT = 1024 * 1024
_LOG_TAIL = 4096
_FIELDS = frozenset(
    {
        "run",
        "step",
        "shard",
        "shards",
        "entrypoint",
        "artifact",
        "sources",
        "params",
        "inputs",
        "dataToken",
        "lineage",
    }
)


def store_root(ctx: TaskContext) -> Path:
    """Where this node's artifact store lives: inside its data-plane directory."""
    return Path(ctx.data.directory) / JOBS_DIR / ARTIFACT_SCOPE


def artifact_store(ctx: TaskContext) -> ArtifactStore:
    """This node's artifact store."""
    return ArtifactStore(store_root(ctx))


def check_step_payload(payload: dict[str, Any], runtime: str) -> None:
    """The shape every step payload has; `InvalidPayload` naming the field otherwise."""
    if not isinstance(payload, dict):
        raise InvalidPayload(f"{runtime}: payload must be an object")
    unknown = set(payload) - _FIELDS
    if unknown:
        raise InvalidPayload(f"{runtime}: unexpected fields {sorted(unknown)}")
    if not isinstance(payload.get("entrypoint"), str) or not payload["entrypoint"]:
        raise InvalidPayload(f"{runtime}: 'entrypoint' must be a non-empty string")
    for key in ("params", "inputs"):
        if not isinstance(payload.get(key, {}), dict):
            raise InvalidPayload(f"{runtime}: {key!r} must be an object")
    try:
        ArtifactMeta.from_json(payload.get("artifact"))
    except (InvalidSpec, ValueError, TypeError) as exc:
        raise InvalidPayload(f"{runtime}: artifact: {exc}") from None
    sources = payload.get("sources", [])
    if not isinstance(sources, list) or not all(
        isinstance(s, dict) and isinstance(s.get("url"), str) and isinstance(s.get("token"), str)
        for s in sources
    ):
        raise InvalidPayload(f"{runtime}: 'sources' must be a list of {{url, token}} objects")


def fetch_artifact(ctx: TaskContext, payload: dict[str, Any]) -> Path:
    """The step's artifact unpacked on this node, fetched from a holder first if it is not cached."""
    store = artifact_store(ctx)
    meta = ArtifactMeta.from_json(payload["artifact"])
    if not store.has_blob(meta.sha256):
        try:
            store.copy_from(meta, payload.get("sources", []))
        except ArtifactUnreachable as exc:
            raise Retry(f"artifact {meta.name}@{meta.version} is not reachable: {exc}", delay=2.0) from None
    return store.unpacked(meta)


@dataclass(slots=True)
class Usage:
    """What an attempt used: CPU seconds of this worker and its children, peak memory, wall time."""

    cpu_s: float = 0.0
    peak_memory_mb: float = 0.0
    wall_s: float = 0.0
    log: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, float]:
        """The seed's resource_used shape, camelCase."""
        return {
            "cpuS": round(self.cpu_s, 6),
            "peakMemoryMB": round(self.peak_memory_mb, 1),
            "wallS": round(self.wall_s, 6),
        }


@contextmanager
def measured() -> Iterator[Usage]:
    """Measure the block's CPU time (this process and waited-for children) and wall time.

    Peak memory is the larger of this worker's and its children's high-water marks: a worker is reused
    across attempts, so it bounds the attempt's peak from above rather than measuring it exactly.
    """
    usage = Usage()
    before = _cpu()
    started = time.monotonic()
    try:
        yield usage
    finally:
        usage.wall_s = time.monotonic() - started
        usage.cpu_s = max(0.0, _cpu() - before)
        peak_kib = max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        usage.peak_memory_mb = peak_kib / 1024


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def step_result(
    ctx: TaskContext, payload: dict[str, Any], outputs: Any, usage: Usage, runtime: str, bytes_in: int = 0
) -> dict[str, Any]:
    """The task result of a step: its outputs (a mapping; large values moved to the data plane, see
    `step_data`), usage and log tail."""
    if outputs is None:
        outputs = {}
    if not isinstance(outputs, dict) or not all(isinstance(k, str) for k in outputs):
        kind = type(outputs).__name__
        raise Fatal(f"{runtime}: a step must return a mapping of output names to values, got {kind}")
    try:
        outputs, bytes_out = spill_outputs(ctx, payload, outputs)
        size = len(orjson.dumps(outputs))
    except TypeError as exc:
        raise Fatal(f"{runtime}: outputs are not JSON values: {exc}") from None
    if size > MAX_INLINE_OUTPUT:
        raise Fatal(
            f"{runtime}: outputs of {size} bytes exceed {MAX_INLINE_OUTPUT} even with large values on the"
            " data plane; return fewer values"
        )
    log = "\n".join(usage.log)[-_LOG_TAIL:]
    measured = {**usage.to_json(), "outputBytes": size, "bytesIn": bytes_in, "bytesOut": bytes_out}
    return {"outputs": outputs, "usage": measured, "log": log}
