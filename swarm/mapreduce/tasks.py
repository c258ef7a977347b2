"""The `mapreduce.map` and `mapreduce.reduce` task types, run in a node's worker processes.

A map task fetches its split from the submitter's data server, runs the app's map, partitions and sorts
the pairs with the numpy kernels (spilling sorted runs to disk past `spill_threshold_mb`), and leaves one
checksummed run per partition in the node's data directory, served by the node's data server. Its result
says where the runs are.

A reduce task fetches its partition's run from every mapper, peer to peer, verifying each checksum (a
corrupt or truncated transfer is fetched again, never merged). If a mapper is gone, the reducer runs
that map again itself for its own partition from the original split, so a lost map output costs one
recomputation and never the job. It then merges the sorted runs, groups by key, reduces, and uploads
`mr-out-<r>` to the submitter, where it appears atomically. It goes through the merge a chunk at a
time, so a reducer holds its runs and one chunk, not a second copy of everything it merged. On the
submitter's own machine, maps read their split and reduces write their output file directly where the
node allows it (`locality`).

Every transfer presents the job's capability token (`payload["token"]`, made by the submitter): the
submitter's data server and the mappers' data servers serve the job's data to it alone. A map task
registers the token beside its outputs (`<data>/mr/<job>/.capability`) before it writes them, which is
how its node's data server learns whom to serve them to.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from swarm.errors import InvalidPayload
from swarm.mapreduce.locality import open_local_output, read_local, read_own_run
from swarm.runtime.datafetch import FetchError, fetch, upload
from swarm.runtime.httpwire import is_name, is_token
from swarm.runtime.jobaccess import JOBS_DIR, register_capability
from swarm.taskapi import TaskContext

# numpy and everything built on it load when a map or a reduce first runs, not with the task types:
# every node loads this module at start, and one that never runs MapReduce need not carry numpy (10 MiB).
if TYPE_CHECKING:
    from swarm.mapreduce.app import App

__all__ = ["OutputSink", "map_handler", "map_split", "reduce_handler", "reduce_partition"]

log = logging.getLogger(__name__)

_COMMON = ("job", "token", "app", "params", "reducers", "combiner", "compress", "boundaries")
#: A reducer merges, reduces and writes its output this many bytes of merged values at a time: its
#: memory is its runs plus one chunk, and a chunk stays in cache from the merge to the write.
REDUCE_CHUNK = 4 * 1024 * 1024
#: A reducer fetches this many map outputs at once: a fetch mostly waits on its peer (connection set-up,
#: the peer's disk, the link), so a few in flight hide that, as Hadoop's parallel copies do.
PARALLEL_FETCHES = 4


def _check(payload: dict[str, Any], *keys: str) -> None:
    missing = [k for k in (*_COMMON, *keys) if k not in payload]
    if missing:
        raise InvalidPayload(f"mapreduce payload lacks {', '.join(missing)}")
    if not isinstance(payload["reducers"], int) or payload["reducers"] < 1:
        raise InvalidPayload("mapreduce: reducers must be a positive integer")
    if not isinstance(payload["job"], str) or not is_name(payload["job"]):
        raise InvalidPayload("mapreduce: the job id is not a plain name")  # it names a directory
    if not isinstance(payload["token"], str) or not is_token(payload["token"]):
        raise InvalidPayload("mapreduce: the job carries no valid capability token")


def _app(payload: dict[str, Any]) -> App:
    from swarm.mapreduce.app import AppSource, load_app

    return load_app(AppSource.from_payload(payload["app"]), payload["params"]).with_combiner(
        payload["combiner"]
    )


def _boundaries(payload: dict[str, Any]) -> Any:
    import numpy as np

    raw = payload["boundaries"]
    return None if raw is None else np.array([bytes.fromhex(b) for b in raw], dtype=np.bytes_)


def _segments(payload: dict[str, Any], key: str, index: int | None = None) -> list[dict[str, Any]]:
    """The segments of a map's split (`plan.Split.to_payload`): `payload[key]`, or its `index`th item."""
    segments = payload[key] if index is None else payload[key][index]
    if not isinstance(segments, list) or not segments or not all(isinstance(s, dict) for s in segments):
        raise InvalidPayload("mapreduce: a map's input must be a list of file segments")
    return segments


def _fetch_segment(
    inp: dict[str, Any], allowed_paths: tuple[str, ...], token: str
) -> tuple[bytes | memoryview, bool]:
    """A segment's bytes, and whether they were read from the file itself (when this node runs on the
    submitter's machine and may, see `locality`: a view of the mapped file) rather than fetched from
    the submitter, checked for length only (see `fetch`'s `verify`)."""
    if inp["end"] <= inp["start"]:
        return b"", False
    local = read_local(inp.get("local"), inp["start"], inp["end"], allowed_paths)
    if local is not None:
        return local, True
    return fetch(inp["url"], token=token, byte_range=(inp["start"], inp["end"] - 1), verify=False), False


def _partitions(app: App, payload: dict[str, Any], keys: Any, values: Any) -> list[tuple[Any, Any]]:
    """One split's pairs as sorted runs per partition (used when a reducer recomputes a lost map)."""
    from swarm.mapreduce.kernels import range_partition_of, split_sorted

    boundaries = _boundaries(payload)
    parts = None if boundaries is None else range_partition_of(keys, boundaries)
    return split_sorted(keys, values, payload["reducers"], parts)


class MapHandler:
    """`mapreduce.map`: one split in, one sorted run per partition out."""

    name = "mapreduce.map"
    version = "1"
    #: Fetches its split from the submitter's data server: a sandbox gives it the network.
    network = True

    def validate(self, payload: dict[str, Any]) -> None:
        """Shape only: the app itself was checked by the submitter."""
        _check(payload, "index", "input")
        _segments(payload, "input")

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Map, partition, sort, spill; return where the runs are."""
        self.validate(payload)  # the job id names a directory and the token guards it: check them here too
        app = _app(payload)
        segments = _segments(payload, "input")
        read = [_fetch_segment(inp, ctx.policy.allowed_paths, payload["token"]) for inp in segments]
        result = map_split(
            ctx,
            app,
            [(inp["file"], data) for inp, (data, _) in zip(segments, read, strict=True)],
            job=payload["job"],
            token=payload["token"],
            out_name=f"m{payload['index']}",
            reducers=payload["reducers"],
            compress=payload["compress"],
            boundaries=_boundaries(payload),
        )
        return {
            **result,
            "bytes_in": sum(len(data) for data, _ in read),
            "local_input": all(local for _, local in read),
        }


def map_split(
    ctx: TaskContext,
    app: App,
    split: Sequence[tuple[str, bytes | memoryview]],
    *,
    job: str,
    token: str,
    out_name: str,
    reducers: int,
    compress: bool,
    boundaries: Any,
    spill_threshold_mb: int | None = None,
) -> dict[str, Any]:
    """Map the (filename, data) pieces of one split into one sorted run per partition, written under
    `<data>/mr/<job>/<out_name>-a<attempt>/` and served to `token`; return where the runs are.

    The engine's map task and a workflow's MAPREDUCE step (`swarm.plugins.step_mapreduce`) both map
    through here. `spill_threshold_mb` lowers the node's own threshold, never raises it."""
    from swarm.mapreduce.runs import Spiller

    root = Path(ctx.data.directory)
    job_dir = root / JOBS_DIR / job
    register_capability(job_dir, token)
    out_dir = job_dir / f"{out_name}-a{ctx.attempt}"
    shutil.rmtree(out_dir, ignore_errors=True)
    combiner = app.combiner if app.vectorized else None
    threshold = ctx.data.spill_threshold_mb
    if spill_threshold_mb is not None:
        threshold = min(threshold, spill_threshold_mb)
    spiller = Spiller(
        out_dir, reducers, threshold * 1024 * 1024, compress, combiner=combiner, boundaries=boundaries
    )
    records = 0
    for keys, values in app.map_batches(split):
        spiller.add(keys, values)
        records += len(keys)
    runs = spiller.finish()
    return {
        "node": ctx.node_id,
        "url": ctx.data.url,
        "records": records,
        "runs": [
            {"path": str(Path(run.path).relative_to(root)), "checksum": run.checksum, "bytes": run.nbytes}
            for run in runs
        ],
    }


class ReduceHandler:
    """`mapreduce.reduce`: fetch partition r of every map, merge, reduce, upload `mr-out-<r>`."""

    name = "mapreduce.reduce"
    version = "1"
    #: Fetches map outputs from peers and uploads its output: a sandbox gives it the network.
    network = True

    def validate(self, payload: dict[str, Any]) -> None:
        """Shape only; `previous` (the maps' results) arrives when the task runs."""
        _check(payload, "partition", "inputs", "output")

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Merge the sorted runs of this partition, reduce, and upload the output file."""
        self.validate(payload)
        app = _app(payload)
        r = payload["partition"]
        token = payload["token"]
        maps = payload.get("previous")
        if isinstance(maps, dict):  # a lone predecessor's result is piped as itself, not as a list
            maps = [maps]
        if not isinstance(maps, list) or len(maps) != len(payload["inputs"]):
            raise InvalidPayload("mapreduce.reduce needs the results of every map task")

        def recompute(i: int) -> Any:
            split = [
                (inp["file"], _fetch_segment(inp, ctx.policy.allowed_paths, token)[0])
                for inp in _segments(payload, "inputs", i)
            ]
            return _partitions(app, payload, *app.map_all(split))[r]

        output = open_local_output(payload.get("output_local"), ctx.policy.allowed_paths)
        with output or _Upload(payload["output"], token) as out:
            result = reduce_partition(
                ctx, app, r, maps, out, job=payload["job"], token=token, recompute=recompute
            )
        return {**result, "local_output": output is not None}


class OutputSink(Protocol):
    """Where a reducer writes its output: `AtomicFile`'s interface."""

    size: int

    def write(self, data: memoryview) -> Any:
        """Append `data`."""

    def commit(self) -> str | None:
        """Make the output final; return its checksum."""


def reduce_partition(
    ctx: TaskContext,
    app: App,
    r: int,
    maps: list[dict[str, Any]],
    out: OutputSink,
    *,
    job: str,
    token: str,
    recompute: Callable[[int], Any],
) -> dict[str, Any]:
    """Fetch partition `r` of every map's output (`maps`: the map results), merge, reduce, write into
    `out` and commit it. A map output that cannot be fetched is rebuilt by `recompute(i)` (the sorted
    run of partition `r` of map i's split). The engine's reduce task and a workflow's MAPREDUCE step
    both reduce through here."""
    from swarm.mapreduce.runs import read_run

    def fetch_run(result: dict[str, Any]) -> bytes | memoryview | FetchError:
        run = result["runs"][r]
        if result.get("node") == ctx.node_id:
            own = read_own_run(ctx.data.directory, run["path"], run["checksum"], job=job)
            if own is not None:
                return own
        try:
            url = f"{result['url']}/f/{run['path']}"
            return fetch(url, token=token, expected_checksum=run["checksum"])
        except FetchError as exc:
            return exc

    with ThreadPoolExecutor(PARALLEL_FETCHES, thread_name_prefix="mr-fetch") as pool:
        fetches = list(pool.map(fetch_run, maps))
    runs, fetched, recomputed = [], 0, 0
    for i, data in enumerate(fetches):
        if not isinstance(data, FetchError):
            runs.append(read_run(data, verified=True))
            fetched += len(data)
        else:
            log.warning("map %d output unreachable (%s); recomputing partition %d", i, data, r)
            runs.append(recompute(i))
            recomputed += 1
    out_keys = 0
    for reduced_keys, reduced in _reduced(app, runs):
        out.write(app.format_output(reduced_keys, reduced))
        out_keys += len(reduced_keys)
    checksum = out.commit()
    return {
        "keys": out_keys,
        "bytes": out.size,
        "checksum": checksum,
        "shuffled": fetched,
        "recomputed_maps": recomputed,
    }


def _reduced(app: App, runs: list[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
    """A partition's reduced keys and values, a chunk of about `REDUCE_CHUNK` bytes of values at a time.

    An app whose reduce only combines partial results reduces the runs at once (`combine_runs`), which is
    cheaper than merging their records first; its output is one value per distinct key. Any other app
    reduces the merge chunk by chunk, every key's records in one chunk."""
    from swarm.mapreduce.merge import MergedRuns, combine_runs

    op = app.merge_op
    if op is not None:
        keys, values = combine_runs(runs, op)
        rows = max(1, REDUCE_CHUNK // max(values[:1].nbytes, 1))
        for start in range(0, len(keys), rows):
            yield keys[start : start + rows], values[start : start + rows]
        return
    merged = MergedRuns(runs)
    for keys, values in merged.chunks(max(1, REDUCE_CHUNK // max(merged.row_bytes, 1))):
        yield app.reduce(keys, values)


class _Upload:
    """A reducer's output bound for the submitter's data server: the chunks are kept (copied, since a
    chunk's buffer is reused) and uploaded together by `commit`; `AtomicFile`'s interface."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.size = 0
        self._parts: list[bytes] = []

    def __enter__(self) -> _Upload:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._parts = []

    def write(self, data: memoryview) -> None:
        """Keep a copy of `data` for the upload."""
        self._parts.append(bytes(data))
        self.size += len(data)

    def commit(self) -> str:
        """Upload everything written; return its checksum."""
        return upload(self.url, self._parts, token=self.token)


map_handler = MapHandler()
reduce_handler = ReduceHandler()
