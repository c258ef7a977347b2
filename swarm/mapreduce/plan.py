"""A MapReduce job as ordinary swarm tasks: M map tasks, then R reduce tasks that wait for all of them.

The submitter checks everything it can before any task starts (inputs exist, the app loads and has map
and reduce, R >= 1), cuts the inputs into splits of about `split_size` bytes (a larger file cut at line or
record boundaries, smaller files packed together, `plan_splits`), and, for apps that range-partition,
samples the inputs for boundaries. Each reduce task depends on every map task and
receives their results (where each map's runs are) as `payload["previous"]`; the scheduler's DAG,
retries and exactly-once commits do the rest.

Every job gets a capability token (`new_capability`), carried to its tasks in their payloads: the data
servers serve a job's bytes (its inputs on the submitter, its map outputs on the nodes) and accept its
outputs only from requests that present it (see `swarm.runtime.dataserver`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from swarm.errors import InvalidSpec
from swarm.mapreduce.app import App, AppSource
from swarm.mapreduce.locality import file_identity
from swarm.messages import RetryPolicy, SubmitJob, TaskSpec
from swarm.runtime.httpwire import MAX_NAME_CHARS, is_name

__all__ = [
    "MAX_AUTO_SPLIT",
    "MIN_AUTO_SPLIT",
    "MapReduceSpec",
    "Segment",
    "Split",
    "auto_split_size",
    "build_job",
    "check_and_sample",
    "check_job_id",
    "new_capability",
    "output_name",
    "plan_splits",
    "upload_budget",
]

SAMPLE_BYTES = 64 * 1024
#: The last split of a file may be this many times the split size (see `plan_splits`).
SPLIT_SLOP = 1.1
#: The largest split the submitter picks by itself (`auto_split_size`), as Hadoop's block and Spark's
#: file partitions default to: a map task holds one.
MAX_AUTO_SPLIT = 128 * 1024 * 1024
#: The smallest it picks: below that a map's fixed costs (dispatch, spill, one run per partition to fetch)
#: outweigh what one more map in parallel gains.
MIN_AUTO_SPLIT = 4 * 1024 * 1024
BOUNDARY_SAMPLE_PER_FILE = 1024 * 1024
#: Unless the submitter sets a cap, a job's outputs may take this many times its input, plus
#: `OUTPUT_BUDGET_SLACK`, on the submitter's disk (retried reduces re-upload; a later upload of an output
#: gives back the bytes of the one it replaces): an output larger than its input is rare (`indexer`
#: lists documents per word), and one many times larger is a runaway or an attack filling the disk.
OUTPUT_BUDGET_FACTOR = 4
OUTPUT_BUDGET_SLACK = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Segment:
    """A byte range of one input file, served by the submitter under `name`."""

    name: str
    filename: str
    start: int
    end: int
    local: dict[str, Any] | None = None  # `locality.file_identity` of the file, for maps on this machine

    def to_payload(self, data_url: str) -> dict[str, Any]:
        """Where a map task fetches this segment (or, on the submitter's machine, reads it)."""
        return {
            "url": f"{data_url}/f/{self.name}",
            "file": self.filename,
            "start": self.start,
            "end": self.end,
            "local": self.local,
        }


@dataclass(frozen=True, slots=True)
class Split:
    """What one map task reads: a piece of one file, or several small files whole."""

    segments: tuple[Segment, ...]

    @property
    def size(self) -> int:
        """Bytes in the split."""
        return sum(segment.end - segment.start for segment in self.segments)

    def to_payload(self, data_url: str) -> list[dict[str, Any]]:
        """Where a map task fetches (or reads) each of the split's segments."""
        return [segment.to_payload(data_url) for segment in self.segments]


@dataclass(frozen=True, slots=True)
class MapReduceSpec:
    """Everything `swarm submit mapreduce` was asked for."""

    app: AppSource
    inputs: tuple[Path, ...]
    reducers: int
    params: dict[str, str]
    #: Bytes per split; None: a split per file; "auto": `auto_split_size` of the cluster's slots.
    split_size: int | Literal["auto"] | None = "auto"
    combiner: str | None = None
    compress: bool = False
    max_retries: int = 3
    timeout: float | None = None
    max_output_bytes: int | None = None  # the outputs' byte budget on the submitter (None: `upload_budget`)


def new_capability() -> str:
    """A fresh capability token for a job: 24 random bytes, URL-safe base64 (32 characters)."""
    return secrets.token_urlsafe(24)


def check_job_id(job_id: str) -> None:
    """Refuse a job id the data plane cannot name: it becomes a directory name on every node."""
    if not is_name(job_id):
        raise InvalidSpec(
            f"job id {job_id[:60]!r} must be 1-{MAX_NAME_CHARS} letters, digits, '-', '_' or '.', "
            "not starting with '.' and without '..'"
        )


def output_name(partition: int) -> str:
    """The name of reduce output `partition` in the output directory."""
    return f"mr-out-{partition}"


def upload_budget(spec: MapReduceSpec) -> int:
    """How many bytes the job's outputs may take on the submitter: `spec.max_output_bytes` if set, else
    `OUTPUT_BUDGET_FACTOR` times the total input size plus `OUTPUT_BUDGET_SLACK`."""
    if spec.max_output_bytes is not None:
        return spec.max_output_bytes
    total = sum(path.stat().st_size for path in spec.inputs)
    return OUTPUT_BUDGET_FACTOR * total + OUTPUT_BUDGET_SLACK


def auto_split_size(total: int, slots: int) -> int:
    """The split size for `total` input bytes on a cluster of `slots` task slots: the fewest whole waves
    of maps (a map for every slot in each) whose splits are at most `MAX_AUTO_SPLIT`, with no split under
    `MIN_AUTO_SPLIT`. Spark sizes its file partitions by the same two bounds and the cluster's
    parallelism.

    Why whole waves of large splits: a map pays fixed costs (its dispatch, its spill, one run per
    partition for every reducer to fetch and merge), and a map's output holds each distinct key of its
    split once, so fewer, larger maps shuffle less; a last wave that leaves slots idle only stretches the
    job. Measured with `bench/wordcount.py` on two one-slot nodes, in alternated runs against the Pool(2)
    program: 128 MB splits (one wave at 256 MB, four at 1 GB) instead of 64 MB took the median ratio of
    pairs from 0.90 to 1.01-1.13 at 256 MB, and from 0.90 to 1.19 at 1 GB, where the reduce phase went
    from 0.50 to 0.29 s."""
    slots = max(1, slots)
    waves = max(1, -(-total // (slots * MAX_AUTO_SPLIT)))
    return max(MIN_AUTO_SPLIT, -(-total // (slots * waves)))


def plan_splits(
    inputs: tuple[Path, ...], split_size: int | None, record_size: int | None = None
) -> list[Split]:
    """Splits of about `split_size` bytes: a larger file is cut into pieces ending at a line (or record)
    boundary, and smaller files, taken in order, share a split while they fit in `split_size` together
    (as Hadoop's CombineFileInputFormat and Spark's file partitions do). Without a `split_size`, one
    split per file.

    Why pack: a map task has fixed costs (dispatch, its spill, one run per partition to fetch and merge),
    and each map's output holds every distinct key of its input once, so the shuffle shrinks with fewer,
    larger maps. Sixteen 16 MB files as four 64 MB splits instead of sixteen took swarm's word count from
    0.94 to 1.03-1.07 times the rate of the Pool(2) program measured in the same runs (`bench/wordcount.py`),
    and halved the bytes shuffled."""
    splits: list[Split] = []
    packed: list[Segment] = []
    packed_size = 0
    for k, path in enumerate(inputs):
        size = path.stat().st_size
        name = f"in/{k}"
        local = file_identity(path)
        if not split_size or size <= split_size:
            if packed and (not split_size or packed_size + size > split_size):
                splits.append(Split(tuple(packed)))
                packed, packed_size = [], 0
            packed.append(Segment(name, path.name, 0, size, local))
            packed_size += size
            continue
        start = 0
        with path.open("rb") as f:
            while start < size:
                # As Hadoop does, a rest of up to `SPLIT_SLOP` split sizes is one split, not a full one and a
                # sliver (the bytes a cut at a record or line boundary left over) in a map of its own.
                end = size
                if size - start > split_size * SPLIT_SLOP:
                    end = _boundary(f, start + split_size, size, record_size)
                splits.append(Split((Segment(name, path.name, start, end, local),)))
                start = end
    if packed:
        splits.append(Split(tuple(packed)))
    return splits


def _boundary(f: BinaryIO, end: int, size: int, record_size: int | None) -> int:
    if record_size:
        return max(record_size, end - end % record_size)
    f.seek(end)
    while True:
        chunk = f.read(64 * 1024)
        if not chunk:
            return size
        newline = chunk.find(b"\n")
        if newline >= 0:
            return end + newline + 1
        end += len(chunk)


def check_and_sample(spec: MapReduceSpec, app: App) -> list[bytes] | None:
    """Refuse a job that cannot work before any task starts; return range boundaries if the app needs them.

    The user's map is not run here: it may have side effects (or kill its process), and it runs where
    tasks run. A map that yields non-string keys fails its first attempt at once, without retries.
    """
    if spec.reducers < 1:
        raise InvalidSpec(f"--reduces must be at least 1, got {spec.reducers}")
    if spec.max_output_bytes is not None and spec.max_output_bytes < 0:
        raise InvalidSpec(f"the output budget must not be negative, got {spec.max_output_bytes}")
    if not spec.inputs:
        raise InvalidSpec("no input files")
    missing = [str(p) for p in spec.inputs if not p.is_file()]
    if missing:
        raise InvalidSpec(f"input file(s) not found: {', '.join(missing)}")
    if app.partitioner != "range":
        return None
    import numpy as np  # only here: a hash-partitioned job is submitted without numpy

    from swarm.mapreduce.kernels import sample_boundaries

    sample = np.concatenate([app.sample_keys(_head(p, None, BOUNDARY_SAMPLE_PER_FILE)) for p in spec.inputs])
    return [bytes(b) for b in sample_boundaries(np.sort(sample), spec.reducers).tolist()]


def _head(path: Path, record_size: int | None, limit: int = SAMPLE_BYTES) -> bytes:
    with path.open("rb") as f:
        data = f.read(limit)
    if record_size:
        return data[: len(data) - len(data) % record_size]
    cut = data.rfind(b"\n")
    return data if cut < 0 or len(data) < limit else data[: cut + 1]


def build_job(
    job_id: str,
    spec: MapReduceSpec,
    splits: list[Split],
    data_url: str,
    boundaries: list[bytes] | None,
    output_dir: dict[str, Any] | None = None,
    *,
    token: str | None = None,
) -> SubmitJob:
    """The job's tasks: maps `<job>.m<i>`, reduces `<job>.r<r>` after every map, fed the maps' results.

    `output_dir` is `locality.file_identity` of the output directory, for reduces on this machine.
    `token` is the job's capability (`new_capability`), which the submitter's data server must accept;
    without one the tasks refuse to run (the simulator, which moves no bytes, builds jobs so).
    """
    common: dict[str, Any] = {
        "job": job_id,
        "token": token,
        "app": spec.app.to_payload(),
        "params": spec.params,
        "reducers": spec.reducers,
        "combiner": spec.combiner,
        "compress": spec.compress,
        "boundaries": None if boundaries is None else [b.hex() for b in boundaries],
    }
    retry = RetryPolicy(max_retries=spec.max_retries, base=0.2, cap=5.0)
    inputs = [s.to_payload(data_url) for s in splits]
    maps = tuple(
        TaskSpec(
            f"{job_id}.m{i}",
            "mapreduce.map",
            {**common, "index": i, "input": inp},
            retry=retry,
            timeout=spec.timeout,
        )
        for i, inp in enumerate(inputs)
    )
    map_ids = tuple(t.task_id for t in maps)
    reduces = tuple(
        TaskSpec(
            f"{job_id}.r{r}",
            "mapreduce.reduce",
            {
                **common,
                "partition": r,
                "inputs": inputs,
                "output": f"{data_url}/f/{output_name(r)}",
                "output_local": None if output_dir is None else {**output_dir, "name": output_name(r)},
            },
            retry=retry,
            timeout=spec.timeout,
            after=map_ids,
            pipe=True,
        )
        for r in range(spec.reducers)
    )
    return SubmitJob(job_id, maps + reduces, kind="mapreduce")
