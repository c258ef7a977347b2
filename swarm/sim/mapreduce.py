"""MapReduce in the simulator: the real job shape and real word counts, on simulated time and disks.

`SimMapReduce.submit` builds a job exactly as `swarm submit mapreduce --app wordcount` does
(`plan.build_job`: M `mapreduce.map` tasks, then R `mapreduce.reduce` tasks after all of them, piped
their results, with retries), over one input file: a corpus generated from the run's seed
(`generate_corpus`), cut into M splits at line boundaries. The object then stands for the submitter's
data server: it serves the splits and receives the outputs (`SimJob.outputs`, the output DIR).

When the world runs an attempt of either type (`SimMapReduce.start`), only the time is simulated; the
work is real and done with the engine's own app and kernels:

* a map counts the words of its split with the `wordcount` app, cuts them into R runs sorted by key by
  the stable FNV-1a hash (`split_sorted`, as the real map's spiller does), and leaves them in the node's
  data dir (`SimNode.files`): a restart without the data dir wipes them and nobody can read them while
  the node is down or cut off. Its result says which node holds which run, with a checksum, as the real
  map's result does.
* a reduce reads its partition's run of every map from the node holding it, when it starts. When that
  node is down, cut off or no longer has the run, it maps that split again itself and keeps partition r,
  as `swarm/mapreduce/tasks.py` does; that costs it one map's time more. When it finishes it merges,
  reduces and writes `mr-out-<r>` to the submitter's outputs.

Durations are the workload's `cost` (one map, one reduce) in seconds on a speed-1 device; the world scales
them by the node's speed and slowness as for every task. What an attempt leaves behind (runs, an output)
is made when it finishes, so an attempt that dies with its node leaves nothing.

The corpus and its reference count (`reference_counts`, a regular expression and a Counter: independent
of the engine) are what the checker's MapReduce invariant compares the outputs against.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from swarm.checksum import new_hasher
from swarm.mapreduce.app import App, AppSource, load_app
from swarm.mapreduce.kernels import Keys, Values, combine, split_sorted
from swarm.mapreduce.merge import merge_sorted
from swarm.mapreduce.plan import MapReduceSpec, Segment, Split, build_job
from swarm.messages import Assignment, SubmitJob
from swarm.sim.simnode import SimNode

__all__ = [
    "MAPREDUCE_TYPES",
    "SimJob",
    "SimMapReduce",
    "generate_corpus",
    "map_split",
    "recompute_partition",
    "reference_counts",
    "split_corpus",
]

MAP, REDUCE = "mapreduce.map", "mapreduce.reduce"
MAPREDUCE_TYPES = (MAP, REDUCE)
#: The app every simulated job runs, named the way `swarm submit mapreduce --app wordcount` names it.
WORDCOUNT = AppSource("wordcount", module="swarm.mapreduce.apps.wordcount")
#: The submitter's data server, as task payloads name it, and the name of its one input file.
DATA_URL = "sim://client"
CORPUS_FILE = "corpus.txt"
#: MapReduce happenings kept per job for the story printed with a violation.
LOG_LENGTH = 400

Run = tuple[Keys, Values]


@dataclass(slots=True)
class SimJob:
    """One submitted job as its submitter holds it: the input it serves, the outputs it received."""

    job_id: str
    corpus: bytes
    reducers: int
    cost: tuple[float, float]
    #: The output DIR: `mr-out-<r>` as (keys, values), keys sorted, written by the reduce of partition r.
    outputs: dict[int, Run] = field(default_factory=dict)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LENGTH))

    def split(self, segments: list[dict[str, Any]]) -> bytes:
        """The bytes of a split, as the data server serves each segment's URL with its byte range (the
        simulated corpus is one file, so a split's segments are ranges of it)."""
        return b"".join(self.corpus[int(s["start"]) : int(s["end"])] for s in segments)


@dataclass(slots=True)
class MapReduceStats:
    """What the simulated MapReduce tasks did in one run (all attempts, finished or not)."""

    maps: int = 0
    reduces: int = 0
    fetched: int = 0
    recomputed: int = 0

    def as_dict(self) -> dict[str, int]:
        """Plain data for the report."""
        return {
            "maps": self.maps,
            "reduces": self.reduces,
            "fetched": self.fetched,
            "recomputed": self.recomputed,
        }


class SimMapReduce:
    """The submitter's data server and the two MapReduce task types, for the simulated nodes."""

    def __init__(self, nodes: dict[str, SimNode], clock: Callable[[], float]) -> None:
        self.nodes = nodes
        self.clock = clock
        self.jobs: dict[str, SimJob] = {}
        self.stats = MapReduceStats()

    def submit(
        self,
        job_id: str,
        corpus: bytes,
        maps: int,
        reducers: int,
        cost: tuple[float, float],
        max_retries: int = 3,
        timeout: float | None = None,
    ) -> SubmitJob:
        """Serve `corpus` as the job's one input and return the job to publish, built by the real planner."""
        spec = MapReduceSpec(
            WORDCOUNT,
            (Path(CORPUS_FILE),),
            reducers,
            {},
            split_size=None,
            max_retries=max_retries,
            timeout=timeout,
        )
        self.jobs[job_id] = SimJob(job_id, corpus, reducers, cost)
        return build_job(job_id, spec, split_corpus(corpus, maps), DATA_URL, None)

    def start(self, node: SimNode, a: Assignment) -> tuple[float, Callable[[], dict[str, Any]]]:
        """An attempt begins on `node`: its cost in seconds on a speed-1 device, and what to do when it
        finishes (leave its output, return its result)."""
        job = self.jobs[a.payload["job"]]
        map_cost, reduce_cost = job.cost
        if a.type == MAP:
            self.stats.maps += 1
            return map_cost, lambda: self._map(node, a, job)
        self.stats.reduces += 1
        runs = self._fetch(node, a, job)
        lost = sum(run is None for run in runs)
        # A lost run is recomputed from the split: the whole split is mapped again for one partition.
        return reduce_cost + lost * map_cost, lambda: self._reduce(node, a, job, runs)

    def drop(self, node: SimNode, job_id: str) -> None:
        """The job is over (`DropJobData`): delete the runs `node` keeps for it."""
        prefix = f"mr/{job_id}/"
        for path in [p for p in node.files if p.startswith(prefix)]:
            del node.files[path]

    # --- the two task types -------------------------------------------------------------------------

    def _map(self, node: SimNode, a: Assignment, job: SimJob) -> dict[str, Any]:
        payload = a.payload
        inp = payload["input"]
        data = job.split(inp)
        runs = map_split(_app(payload), str(inp[0]["file"]), data, int(payload["reducers"]))
        base = f"mr/{job.job_id}/m{payload['index']}-a{a.attempt}"
        infos = []
        for p, (keys, values) in enumerate(runs):
            path = f"{base}/part-{p}.run"
            node.files[path] = (keys, values)
            infos.append(
                {"path": path, "checksum": _checksum(keys, values), "bytes": keys.nbytes + values.nbytes}
            )
        records = sum(len(keys) for keys, _ in runs)
        self._note(job, f"{node.node_id} map m{payload['index']}#{a.attempt} left {len(runs)} runs")
        return {
            "node": node.node_id,
            "url": f"sim://{node.node_id}",
            "records": records,
            "bytes_in": len(data),
            "runs": infos,
        }

    def _fetch(self, reader: SimNode, a: Assignment, job: SimJob) -> list[Run | None]:
        """Partition r's run of every map, from the node holding it; None where it cannot be had."""
        r = int(a.payload["partition"])
        maps = a.payload["previous"]
        if isinstance(maps, dict):  # a lone predecessor's result is piped as itself, not as a list
            maps = [maps]
        runs: list[Run | None] = []
        missing: list[str] = []
        for i, result in enumerate(maps):
            path = result["runs"][r]["path"]
            holder = self.nodes.get(result["node"])
            run: Run | None = None
            # The data plane is modelled as reaching every node that is up with its link intact.
            if holder is None or not holder.up:
                why = "down"
            elif holder is not reader and holder.link is not None:
                why = "cut off"
            else:
                run = holder.files.get(path)
                why = "lost it"
                if run is not None and _checksum(*run) != result["runs"][r]["checksum"]:
                    run, why = None, "holds a damaged run"  # never merged: recomputed instead
            if run is None:
                missing.append(f"m{i} ({result['node']} {why})")
            runs.append(run)
        self.stats.fetched += len(runs) - len(missing)
        self.stats.recomputed += len(missing)
        what = f"recomputes {', '.join(missing)}" if missing else "recomputes nothing"
        self._note(
            job, f"{reader.node_id} reduce r{r}#{a.attempt} fetched {len(runs) - len(missing)} runs, {what}"
        )
        return runs

    def _reduce(self, node: SimNode, a: Assignment, job: SimJob, fetched: list[Run | None]) -> dict[str, Any]:
        payload = a.payload
        r, reducers = int(payload["partition"]), int(payload["reducers"])
        app = _app(payload)
        runs: list[Run] = []
        for i, run in enumerate(fetched):
            if run is not None:
                runs.append(run)
                continue
            inp = payload["inputs"][i]
            runs.append(recompute_partition(app, str(inp[0]["file"]), job.split(inp), reducers, r))
        keys, values = app.reduce(*merge_sorted(runs))
        job.outputs[r] = (keys, values)
        self._note(job, f"{node.node_id} reduce r{r}#{a.attempt} wrote mr-out-{r} ({len(keys)} keys)")
        return {
            "keys": len(keys),
            "bytes": keys.nbytes + values.nbytes,
            "checksum": _checksum(keys, values),
            "shuffled": sum(k.nbytes + v.nbytes for k, v in (run for run in fetched if run is not None)),
            "recomputed_maps": sum(run is None for run in fetched),
        }

    def _note(self, job: SimJob, what: str) -> None:
        job.log.append(f"{self.clock():.3f} {what}")


def map_split(app: App, filename: str, data: bytes, reducers: int) -> list[Run]:
    """A map's output for one split: the app's pairs in one run per partition (the stable hash's), sorted
    by key and combined, as the real map's spiller leaves them for a split that fits in memory."""
    keys, values = app.map(filename, data)
    runs = split_sorted(keys, values, reducers)
    if app.vectorized and app.combiner is not None:
        runs = [combine(k, v, app.combiner) for k, v in runs]
    return runs


def recompute_partition(app: App, filename: str, data: bytes, reducers: int, r: int) -> Run:
    """What a reducer does for a map output it cannot fetch: map the split again and keep partition r
    (as `tasks.ReduceHandler` does: sorted, not combined; the reduce combines)."""
    keys, values = app.map(filename, data)
    return split_sorted(keys, values, reducers)[r]


def split_corpus(corpus: bytes, maps: int) -> list[Split]:
    """`maps` splits of the one input file of about equal size, each ending at a line boundary as
    `plan.plan_splits` cuts (a split may be empty when there are fewer lines than maps)."""
    cuts = [0]
    for i in range(1, maps):
        newline = corpus.find(b"\n", max(len(corpus) * i // maps, cuts[-1]))
        cuts.append(len(corpus) if newline < 0 else newline + 1)
    cuts.append(len(corpus))
    return [Split((Segment("in/0", CORPUS_FILE, start, end),)) for start, end in pairwise(cuts)]


# Separators between words: mostly spaces, some punctuation, a line break about every ten words.
_SEPARATORS = np.array([b" "] * 5 + [b", ", b". ", b"; ", b' "', b"\n"], dtype="S2")
_WIDTH = 12  # bytes per vocabulary word: up to 8 letters plus a two-byte UTF-8 character


def generate_corpus(seed: int, words: int) -> bytes:
    """`words` words of text, the same for the same seed on any platform and numpy version.

    The vocabulary is made-up words (some with apostrophes, some numbers, some with an "é", whose bytes
    the tokenizer treats as separators), drawn Zipf-like so that a few words are frequent, some
    capitalised or upper case, between spaces, punctuation and line breaks. `RandomState` is numpy's
    legacy generator, kept because its stream is frozen across versions: a replay is the same run.
    """
    rs = np.random.RandomState(seed)
    vocab = max(words // 10, 50)
    lengths = rs.randint(1, 9, vocab)
    matrix = rs.randint(ord("a"), ord("z") + 1, (vocab, _WIDTH)).astype(np.uint8)
    digits = rs.random_sample(vocab) < 0.05
    matrix[digits] = rs.randint(ord("0"), ord("9") + 1, (int(digits.sum()), _WIDTH))
    rows = np.arange(vocab)
    apostrophe = (rs.random_sample(vocab) < 0.05) & (lengths >= 3)
    matrix[rows[apostrophe], lengths[apostrophe] - 2] = ord("'")
    matrix[np.arange(_WIDTH) >= lengths[:, None]] = 0
    accent = rs.random_sample(vocab) < 0.03
    matrix[rows[accent], lengths[accent]] = 0xC3
    matrix[rows[accent], lengths[accent] + 1] = 0xA9
    weights = np.cumsum(1.0 / np.arange(1, vocab + 1))
    picks = np.minimum(np.searchsorted(weights, rs.random_sample(words) * weights[-1]), vocab - 1)
    text = np.zeros((words, _WIDTH + 2), dtype=np.uint8)
    text[:, :_WIDTH] = matrix[picks]
    case = rs.random_sample(words)
    shift = np.zeros((words, _WIDTH), dtype=np.uint8)
    shift[case < 0.05] = 32  # UPPER CASE
    shift[(case >= 0.05) & (case < 0.2), 0] = 32  # Capitalised
    letters = (text[:, :_WIDTH] >= ord("a")) & (text[:, :_WIDTH] <= ord("z"))
    text[:, :_WIDTH] -= shift * letters
    text[:, _WIDTH:] = _SEPARATORS[rs.randint(0, len(_SEPARATORS), words)].view(np.uint8).reshape(words, 2)
    # Words and separators hold no NUL but their padding: dropping every NUL leaves the text.
    return text.tobytes().replace(b"\0", b"")


def reference_counts(corpus: bytes) -> Counter[bytes]:
    """The word count of the whole corpus, computed without the engine: the definition
    `words.tokenize_words` documents (maximal runs of [a-z0-9'] after ASCII lowercasing) as a regular
    expression, counted by a Counter. The generated words are far below `wordcount.MAX_WORD`."""
    return Counter(re.findall(rb"[a-z0-9']+", corpus.lower()))


def _app(payload: dict[str, Any]) -> App:
    """The app a task payload names, as the real task handlers load it."""
    return load_app(AppSource.from_payload(payload["app"]), payload["params"]).with_combiner(
        payload["combiner"]
    )


def _checksum(keys: Keys, values: Values) -> str:
    """`swarm.checksum` of a run's dtypes and bytes (the real runs' checksum covers their whole file)."""
    hasher = new_hasher()
    for array in (keys, values):
        hasher.update(array.dtype.str.encode())
        hasher.update(np.ascontiguousarray(array).tobytes())
    return hasher.hexdigest()
