"""Large step outputs travel on the data plane, not through the broker.

A step's outputs go into its commit, which every observer of the job reads from the broker. An output
whose JSON exceeds `INLINE_LIMIT` is instead written to the data plane of the node that ran the step
(`<data>/mr/<run>/out/<task>.<attempt>.<output>.json`, served to the run's capability token) and replaced
by a reference::

    {"$ref": {"url": "http://node:port/f/mr/<run>/out/...", "sha256": "...", "size": 12345}}

A downstream step's runtime fetches every reference among its inputs (also inside the list a fanned-out
upstream hands on), checks its hash and size, and gives the step the value itself, so step code never
sees a reference. The data lives as long as the run: the node drops a run's directory when its job ends.
A reference that cannot be fetched (its member is gone) is made again here from the recipe the
coordinator sent with the step (`swarm.workflow.lineage`), when there is one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from swarm.errors import Fatal, Retry
from swarm.runtime.datafetch import FetchError, fetch, file_url
from swarm.runtime.jobaccess import JOBS_DIR, job_data_name, register_capability
from swarm.taskapi import TaskContext
from swarm.workflow.lineage import REF_KEY, is_reference

__all__ = [
    "INLINE_LIMIT",
    "MAX_REFERENCED_BYTES",
    "REF_KEY",
    "Remake",
    "is_reference",
    "remaker",
    "resolve_inputs",
    "resolve_value",
    "spill_outputs",
]

#: Makes the value of a reference URL again (`remaker`); LookupError when it has no recipe for it.
Remake = Callable[[str], Any]
#: Outputs whose JSON is larger than this go to the data plane.
INLINE_LIMIT = 256 * 1024
#: The largest value a reference may carry (it is read into the step's memory).
MAX_REFERENCED_BYTES = 256 * 1024 * 1024


def spill_outputs(
    ctx: TaskContext, payload: dict[str, Any], outputs: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    """`outputs` with every large value replaced by a reference; and the bytes written."""
    token = payload.get("dataToken")
    run = payload.get("run")
    out: dict[str, Any] = {}
    written = 0
    for name, value in outputs.items():
        data = orjson.dumps(value)
        if len(data) <= INLINE_LIMIT or not isinstance(token, str) or not isinstance(run, str):
            out[name] = value
            continue
        if len(data) > MAX_REFERENCED_BYTES:
            raise Fatal(
                f"output {name} is {len(data)} bytes; at most {MAX_REFERENCED_BYTES} may pass between steps"
            )
        register_capability(Path(ctx.data.directory) / JOBS_DIR / job_data_name(run), token)
        path, url = _spilled(ctx, run, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[name] = {REF_KEY: {"url": url, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}
        written += len(data)
    return out, written


def _spilled(ctx: TaskContext, run: str, name: str) -> tuple[Path, str]:
    """Where output `name` of this attempt goes on the node's data plane, and its URL."""
    relative = f"{JOBS_DIR}/{job_data_name(run)}/out/{_safe(ctx.task_id)}.{ctx.attempt}.{_safe(name)}.json"
    return Path(ctx.data.directory) / relative, file_url(ctx.data.url, relative)


def resolve_inputs(ctx: TaskContext, payload: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The step's inputs with every reference replaced by its value; and the bytes fetched."""
    inputs = payload.get("inputs") or payload.get("params") or {}
    token = payload.get("dataToken")
    remake = remaker(ctx, payload)
    fetched = 0
    resolved = {}
    for name, value in inputs.items():
        resolved[name], size = resolve_value(value, token, remake)
        fetched += size
    return resolved, fetched


def remaker(ctx: TaskContext, payload: dict[str, Any]) -> Remake | None:
    """How this attempt makes a lost input again: by running, here, the upstream task of the recipe the
    coordinator sent for its URL (`payload["lineage"]`); None without recipes."""
    lineage = payload.get("lineage")
    if not isinstance(lineage, dict) or not lineage:
        return None

    def remake(url: str) -> Any:
        recipe = lineage.get(url)
        if not isinstance(recipe, dict):
            raise LookupError(url)
        return _remade(ctx, recipe)

    return remake


def _remade(ctx: TaskContext, recipe: dict[str, Any]) -> Any:
    # Imported here: these runtimes import this module.
    from swarm.plugins.step_program import jvm_handler, shell_handler
    from swarm.plugins.step_python import handler as python_handler

    handler = {h.name: h for h in (python_handler, shell_handler, jvm_handler)}.get(str(recipe.get("type")))
    payload = recipe.get("payload")
    if handler is None or not isinstance(payload, dict):
        raise LookupError(f"no runtime here makes {recipe.get('type')!r} tasks again")
    handler.validate(payload)
    # Its own task id: its large outputs are written beside, not over, this attempt's.
    again = dataclasses.replace(ctx, task_id=str(recipe.get("task")))
    name = str(recipe.get("output"))
    value = handler.run(again, payload)["outputs"].get(name)
    if is_reference(value):  # large again: just written to this node's data plane
        value = orjson.loads(_spilled(again, str(payload.get("run")), name)[0].read_bytes())
    return value


def resolve_value(value: Any, token: Any, remake: Remake | None = None) -> tuple[Any, int]:
    """`value` with every reference in it (itself, or an item of a list) replaced by the value it names,
    fetched with the run's data `token` and checked against its hash and size, or made again by
    `remake` when it cannot be fetched; and the bytes fetched."""
    if isinstance(value, list):
        items = [resolve_value(item, token, remake) for item in value]
        return [item for item, _ in items], sum(size for _, size in items)
    if not is_reference(value):
        return value, 0
    ref = value[REF_KEY]
    if not isinstance(token, str):
        raise Fatal("an input is a data-plane reference, but the step has no data token")
    size = ref.get("size")
    if not isinstance(size, int) or not 0 <= size <= MAX_REFERENCED_BYTES:
        raise Fatal(f"a reference's size must be 0..{MAX_REFERENCED_BYTES}")
    try:
        data = fetch(str(ref.get("url")), token=token, retries=2, timeout=60.0)
    except FetchError as exc:
        if remake is not None:
            try:
                return remake(str(ref.get("url"))), 0
            except LookupError:
                pass
        # The upstream's node may be gone with its data, and no recipe makes it here: another attempt
        # may find it back (a restarted member), else the step fails with this reason.
        raise Retry(f"cannot fetch an input from {ref.get('url')}: {exc}", delay=2.0) from None
    if len(data) != size or hashlib.sha256(data).hexdigest() != ref.get("sha256"):
        raise Fatal(f"an input fetched from {ref.get('url')} does not match its hash or size")
    return orjson.loads(data), len(data)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)[:100]
