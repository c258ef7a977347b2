"""The MAPREDUCE workflow runtime's tasks: a MapReduce engine job's maps and reduces inside a DAG run.

`swarm.workflow.mrstep` expands a MAPREDUCE step into M `step.mapreduce.map` tasks, R
`step.mapreduce.reduce` tasks and one `step.mapreduce.collect` task; this module runs them, through the
engine's own map and reduce (`swarm.mapreduce.tasks.map_split`, `reduce_partition`): the same app
loading, numpy partitioning and sorting, spilled runs, checksummed peer-to-peer shuffle and recomputation
of lost map outputs as `swarm submit mapreduce`.

What differs is where the data comes from and goes to. There is no submitter's data server: a map cuts
its split out of the step's `input` (inline data, or data-plane references the upstream steps left,
fetched with the run's data token; `mrstep.plan_splits`), writes its runs into the run's data directory
on its node (served to the run's token, dropped with the run), and a reducer's output becomes its
partition's text in the step's outputs (on the data plane when large, like any step output). The app
comes from a `mapreduce` artifact (its module's source, as `--app file.py` sends it) or is a built-in.

Payload (beside the step payload's `run`, `step`, `entrypoint`, `artifact`, `sources`, `params`,
`inputs`, `dataToken`): `mapreduce = {"maps", "reduces", "compress", "spillMB", "part", "index"}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from swarm import __version__
from swarm.checksum import checksum_bytes
from swarm.errors import Fatal, InvalidPayload, InvalidSpec
from swarm.plugins.step_data import Remake, is_reference, remaker, resolve_value
from swarm.plugins.step_runtime import Usage, fetch_artifact, measured, step_result
from swarm.runtime.artifacts import ArtifactMeta
from swarm.runtime.httpwire import is_token
from swarm.runtime.jobaccess import job_data_name
from swarm.taskapi import TaskContext
from swarm.workflow.mrstep import (
    BUILTIN_APPS,
    COLLECT_TYPE,
    INPUT,
    MAP_TYPE,
    MAPS_INPUT,
    REDUCE_TYPE,
    cut,
    plan_splits,
)

if TYPE_CHECKING:
    from swarm.mapreduce.app import App

__all__ = ["collect_handler", "map_handler", "reduce_handler", "split_of"]

_FIELDS = frozenset(
    {"run", "step", "entrypoint", "artifact", "sources", "params", "inputs", "dataToken", "mapreduce"}
    | {"lineage"}
)
_MAX_TASKS = 100_000


def _check(payload: Any, name: str, part: str) -> dict[str, Any]:
    """The payload's shape; `InvalidPayload` naming the field otherwise. Returns its `mapreduce` part."""
    if not isinstance(payload, dict):
        raise InvalidPayload(f"{name}: payload must be an object")
    unknown = set(payload) - _FIELDS
    if unknown:
        raise InvalidPayload(f"{name}: unexpected fields {sorted(unknown)}")
    for key in ("run", "step", "entrypoint"):
        if not isinstance(payload.get(key), str):
            raise InvalidPayload(f"{name}: {key!r} must be a string")
    if not isinstance(payload.get("dataToken"), str) or not is_token(payload["dataToken"]):
        raise InvalidPayload(f"{name}: the run's data token is missing or malformed")
    for key in ("params", "inputs"):
        if not isinstance(payload.get(key, {}), dict):
            raise InvalidPayload(f"{name}: {key!r} must be an object")
    if payload.get("artifact") is not None:
        try:
            ArtifactMeta.from_json(payload["artifact"])
        except (InvalidSpec, ValueError, TypeError) as exc:
            raise InvalidPayload(f"{name}: artifact: {exc}") from None
    elif payload["entrypoint"] not in BUILTIN_APPS:
        raise InvalidPayload(f"{name}: no artifact, and {payload['entrypoint']!r} is no built-in app")
    config = payload.get("mapreduce")
    if not isinstance(config, dict) or config.get("part") != part:
        raise InvalidPayload(f"{name}: 'mapreduce' must be an object with part {part!r}")
    for key in ("maps", "reduces"):
        value = config.get(key)
        if type(value) is not int or not 1 <= value <= _MAX_TASKS:
            raise InvalidPayload(f"{name}: mapreduce.{key} must be an integer 1..{_MAX_TASKS}")
    if part != "collect":
        bound = config["maps"] if part == "map" else config["reduces"]
        index = config.get("index")
        if type(index) is not int or not 0 <= index < bound:
            raise InvalidPayload(f"{name}: mapreduce.index must be an integer 0..{bound - 1}")
    spill = config.get("spillMB")
    if spill is not None and (type(spill) is not int or spill < 1):
        raise InvalidPayload(f"{name}: mapreduce.spillMB must be a positive integer")
    return config


def _app(ctx: TaskContext, payload: dict[str, Any]) -> App:
    """The step's app, loaded with the step's other inputs as its parameters (strings, as
    `--param name=value` gives them; other values as JSON)."""
    from swarm.mapreduce.app import AppSource, load_app

    inputs = payload.get("inputs") or payload.get("params") or {}
    params = {
        name: value if isinstance(value, str) else orjson.dumps(value).decode()
        for name, value in inputs.items()
        if name != INPUT and not name.startswith("_")
    }
    if payload.get("artifact") is not None:
        meta = ArtifactMeta.from_json(payload["artifact"])
        module = fetch_artifact(ctx, payload) / meta.filename
        if not meta.filename.endswith(".py") or not module.is_file():
            raise Fatal(f"artifact {meta.name}@{meta.version} is not one module, so not a MapReduce app")
        source = AppSource(Path(meta.filename).stem, source=module.read_text(errors="replace"))
    else:
        source = AppSource(payload["entrypoint"], module=f"swarm.mapreduce.apps.{payload['entrypoint']}")
    try:
        app = load_app(source, params)
    except InvalidSpec as exc:
        raise Fatal(str(exc)) from None  # the same app fails the same way on every attempt
    if app.partitioner == "range":
        raise Fatal(
            f"app {app.name} partitions by range, which needs boundaries sampled from the whole input"
            " before any map starts; a MAPREDUCE step runs hash-partitioned apps only"
        )
    return app


def _elements(value: Any) -> list[tuple[str, Any]]:
    """The input's elements as (name, value): a string is one, a list one per item, an object one per
    key; a value may still be a data-plane reference."""
    if isinstance(value, list):
        return [(f"{INPUT}-{k}", item) for k, item in enumerate(value)]
    if isinstance(value, dict) and not is_reference(value):
        return [(str(name), item) for name, item in value.items()]
    return [(INPUT, value)]


def _as_bytes(value: Any) -> bytes:
    """An element's data: a string's UTF-8; a list's items one per line; anything else its JSON."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        lines = [item if isinstance(item, str) else orjson.dumps(item).decode() for item in value]
        return "".join(f"{line}\n" for line in lines).encode()
    return orjson.dumps(value)


def split_of(
    payload: dict[str, Any], index: int, maps: int, remake: Remake | None = None
) -> tuple[list[tuple[str, bytes]], int]:
    """Map `index`'s split of the step's input as (name, data) pieces, and the bytes fetched for it.

    Only the elements this map needs are fetched: give a list (a fanned-out upstream hands one on, each
    shard's value its own reference when large) to spread the fetching over the maps."""
    inputs = payload.get("inputs") or payload.get("params") or {}
    if INPUT not in inputs:
        raise Fatal(f"a MAPREDUCE step maps its input named {INPUT!r}, and none was given or mapped")
    token = payload.get("dataToken")
    top, fetched = (
        resolve_value(inputs[INPUT], token, remake) if is_reference(inputs[INPUT]) else (inputs[INPUT], 0)
    )
    elements = _elements(top)
    data: dict[int, bytes] = {}
    split = []
    for k, piece, pieces in plan_splits(len(elements), maps)[index]:
        if k not in data:
            value, size = resolve_value(elements[k][1], token, remake)
            data[k] = _as_bytes(value)
            fetched += size
        split.append((elements[k][0], cut(data[k], piece, pieces)))
    return split, fetched


def _job(payload: dict[str, Any]) -> str:
    """The run's data directory under `mr/`, where the maps leave their runs."""
    return job_data_name(payload["run"])


def _out_name(payload: dict[str, Any], index: int) -> str:
    step = "".join(c if c.isalnum() or c in "-_" else "-" for c in payload["step"])[:100]
    return f"{step}.m{index}"


class _Step:
    name = ""
    part = ""
    version = __version__
    #: Fetches its artifact, its input and map outputs from peers' data servers.
    network = True

    def validate(self, payload: dict[str, Any]) -> None:
        """Check the payload's shape."""
        _check(payload, self.name, self.part)


class MapStep(_Step):
    """`step.mapreduce.map`: map split `index` of the step's input into one sorted run per partition."""

    name = MAP_TYPE
    part = "map"

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Cut the split, map it through the engine, and say where the runs are."""
        from swarm.mapreduce.tasks import map_split

        config = _check(payload, self.name, self.part)
        with measured() as usage:
            app = _app(ctx, payload)
            split, fetched = split_of(payload, config["index"], config["maps"], remaker(ctx, payload))
            result = map_split(
                ctx,
                app,
                split,
                job=_job(payload),
                token=payload["dataToken"],
                out_name=_out_name(payload, config["index"]),
                reducers=config["reduces"],
                compress=bool(config.get("compress")),
                boundaries=None,
                spill_threshold_mb=config.get("spillMB"),
            )
        mapped = sum(len(data) for _, data in split)
        return step_result(ctx, payload, {"map": {**result, "bytes": mapped}}, usage, self.name, fetched)


class _Text:
    """A reducer's output kept in memory (it becomes the partition's text in the step's outputs)."""

    def __init__(self) -> None:
        self.size = 0
        self.parts: list[bytes] = []

    def write(self, data: memoryview) -> None:
        """Keep a copy (a chunk's buffer is reused)."""
        self.parts.append(bytes(data))
        self.size += len(data)

    def commit(self) -> str:
        """The checksum of everything written."""
        return checksum_bytes(b"".join(self.parts))


class ReduceStep(_Step):
    """`step.mapreduce.reduce`: merge partition `index` of every map's runs, reduce it, and output it."""

    name = REDUCE_TYPE
    part = "reduce"

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Reduce through the engine; the partition's `key value` lines become the output `partition`."""
        from swarm.mapreduce.kernels import split_sorted
        from swarm.mapreduce.tasks import reduce_partition

        config = _check(payload, self.name, self.part)
        maps = _map_results(payload, config)
        r = config["index"]
        with measured() as usage:
            app = _app(ctx, payload)

            def recompute(i: int) -> Any:
                split = split_of(payload, i, config["maps"], remaker(ctx, payload))[0]
                return split_sorted(*app.map_all(split), config["reduces"], None)[r]

            out = _Text()
            result = reduce_partition(
                ctx, app, r, maps, out, job=_job(payload), token=payload["dataToken"], recompute=recompute
            )
        outputs = {
            "partition": b"".join(out.parts).decode("utf-8", errors="replace"),
            "keys": result["keys"],
            "records": sum(int(m.get("records", 0)) for m in maps),
            "shuffled": result["shuffled"],
            "recomputedMaps": result["recomputed_maps"],
        }
        return step_result(ctx, payload, outputs, usage, self.name, result["shuffled"])


def _map_results(payload: dict[str, Any], config: dict[str, Any]) -> list[dict[str, Any]]:
    """The maps' results, in map order, each naming one run per partition."""
    maps = (payload.get("inputs") or {}).get(MAPS_INPUT)
    if isinstance(maps, dict):  # one map: an edge from a single task hands on its value itself
        maps = [maps]
    if not isinstance(maps, list) or len(maps) != config["maps"]:
        raise InvalidPayload(f"{REDUCE_TYPE} needs the results of all {config['maps']} maps")
    for result in maps:
        runs = result.get("runs") if isinstance(result, dict) else None
        if not isinstance(runs, list) or len(runs) != config["reduces"]:
            raise InvalidPayload(f"{REDUCE_TYPE}: a map result must name {config['reduces']} runs")
    return maps


class CollectStep(_Step):
    """`step.mapreduce.collect`: the step's outputs, from its reduces' (nothing is fetched)."""

    name = COLLECT_TYPE
    part = "collect"

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """`partitions` in partition order (each the text of one reduce output, or its reference)."""
        config = _check(payload, self.name, self.part)
        inputs = payload.get("inputs") or {}

        def each(name: str) -> list[Any]:
            value = inputs.get(name)
            values = value if config["reduces"] > 1 else [value]
            if not isinstance(values, list) or len(values) != config["reduces"]:
                raise InvalidPayload(f"{self.name}: expected {config['reduces']} values of {name}")
            return values

        records = each("_records")
        outputs = {
            "partitions": each("_partition"),
            "keys": sum(int(k or 0) for k in each("_keys")),
            "records": int(records[0] or 0),
            "maps": config["maps"],
            "reduces": config["reduces"],
        }
        return step_result(ctx, payload, outputs, Usage(), self.name)


map_handler = MapStep()
reduce_handler = ReduceStep()
collect_handler = CollectStep()
