"""Word count benchmark: swarm MapReduce against the tools a user would otherwise pick, on this machine.

It generates a deterministic Zipf-like English corpus (by default 256 MB and 1 GB, 16 files each,
made with numpy from a fixed seed in a temporary directory that lives as long as the run) and counts
its words, in one run, with:

* swarm, two ways: `python -m swarm.cli submit mapreduce --app wordcount` against two `swarm join
  --slots 1` nodes and a mosquitto this script starts on a loopback port (timed from the command's
  start to its exit, when every `mr-out-<r>` is final: a fresh interpreter each time), and the same
  job through `swarm.Client.mapreduce` from this process, on a client connected before the clock as
  Dask's is (timed from the call to its return, when every `mr-out-<r>` is final);
* single-process Python: `re.findall` + `collections.Counter`, file by file;
* the GNU coreutils pipeline `tr -cs "A-Za-z0-9'" '\\n' | tr A-Z a-z | sort | uniq -c` (LC_ALL=C);
* Dask distributed (2 worker processes, 1 thread each), two ways: `client.map` of the numpy counting
  function over the files, and a `dask.bag` of lines with a Python tokenizer;
* PySpark `local[2]`, two ways: the classic RDD program (Python `flatMap`/`reduceByKey`) and the
  DataFrame one (`split`/`explode`/`groupBy().count()`, run in the JVM);
* a hand-written `multiprocessing.Pool(2)` numpy program: each worker counts whole files with
  `swarm.mapreduce.words.count_words` (short words packed into uint64 keys, counted by a sort and
  run lengths; the longer ones apart), the parent merges the packed counts. No framework can do the
  same work with less overhead on two cores: it is the ceiling the others pay their overhead against.

A word is what swarm's wordcount says: a maximal run of ASCII letters, digits and apostrophes,
lowercased (every other byte, non-ASCII ones included, separates words). Every system's {word: count}
is compared with the Pool program's, and a system that disagrees is reported as WRONG. Rates are MB/s
of input (10**6 bytes per second of wall time, from submitting the work to having the counts: in the
driver's memory for the in-process systems, in output files for swarm and coreutils). Start-up of a
framework (cluster, JVM) is not timed; each gets one small warm-up job first.

Why `--reduces 2` for swarm, and no `--split-size` (the defaults): the map side aggregates, so a
split's output is its distinct words (a few MB), and the reduce phase is short; two reducers run at
once on the two nodes, more would only add tasks and fetches. Without a split size the submitter fills
whole waves of the cluster's two slots with splits of at most 128 MB (`plan.auto_split_size`): 8 maps
at 1 GB (two 64 MB files packed in each), 4 per node, and 2 at 256 MB (eight 16 MB files in each), one
per node, so per-task costs (the split's fetch, the spill, one run file per partition) are paid as few
times as the two slots allow. The Pool program counts file by file, as a hand-written program would.

Why each swarm run is followed by a run of the Pool program: this machine's speed drifts by a quarter
and more within minutes (the same job takes 6.5 s and then 10 s), and the systems run one after
another, so a best-of-3 taken minutes apart compares the machine's phases as much as the programs.
The goal against Pool(2) is judged on the median of the ratios of those alternated pairs, each pair a
few seconds apart; the best-of ratio is printed beside it.

Usage (from the repository root, with `pip install -e .[bench]` and `pip install pyspark`)::

    python bench/wordcount.py                     # 256 MB and 1 GB, every system
    python bench/wordcount.py --sizes 256M --skip spark-rdd,dask-bag
    python bench/wordcount.py --sizes 64M --profile    # py-spy the swarm job, print its hot spots

Everything runs on loopback; every process and temporary file it creates is removed at the end, also
after Ctrl-C or a failure.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import mmap
import multiprocessing
import operator
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from _cluster import (
    HOST,
    SwarmCluster,
    dask_local_cluster,
    parse_size,
    phase_report,
    profile_report,
    run_mapreduce,
    say,
    scratch_dir,
    sigterm_as_interrupt,
    size_label,
)

from swarm.client import Client
from swarm.mapreduce.words import WordCounts, count_words, merge_word_counts

FILES = 16
SEED = 20_240_611
MB = 1e6
MAX_WORD = 256  # swarm's wordcount cuts longer words; the corpus has none that long
POOL_SHARE_TARGET = 1.0
SWARMS = ("swarm", "swarm-client")
SYSTEMS = (*SWARMS, "counter", "coreutils", "dask-map", "dask-bag", "spark-rdd", "spark-df", "pool")
FRAMEWORKS = ("dask-map", "dask-bag", "spark-rdd", "spark-df")
LABELS = {
    "swarm": "swarm CLI (2 nodes x 1 slot)",
    "swarm-client": "swarm Python client (same)",
    "counter": "Python Counter (1 process)",
    "coreutils": "coreutils tr|sort|uniq -c",
    "dask-map": "Dask client.map + numpy",
    "dask-bag": "Dask bag",
    "spark-rdd": "PySpark local[2] RDD",
    "spark-df": "PySpark local[2] DataFrame",
    "pool": "multiprocessing.Pool(2) numpy",
}
WORD_RE = re.compile(rb"[a-z0-9']+")
STR_WORD_RE = re.compile(r"[A-Za-z0-9']+")  # ASCII only: lowering the match cannot leave ASCII
Counts = dict[bytes, int]


# --- the corpus ---------------------------------------------------------------------------------------

COMMON = """
the of and to a in is it you that he was for on are with as i his they be at one have this from or had by not
word but what some we can out other were all there when up use your how said an each she which do their time
if will way about many then them write would like so these her long make thing see him two has look more day
could go come did number sound no most people my over know water than call first who may down side been now
find any new work part take get place made live where after back little only round man year came show every
good me give our under name very through just form sentence great think say help low line differ turn cause
much mean before move right boy old too same tell does set three want air well also play small end put home
read hand port large spell add even land here must big high such follow act why ask men change went light
kind off need house picture try us again animal point mother world near build self earth father
"""
SPECIAL = [
    "don't", "it's", "i'm", "can't", "won't", "didn't", "that's", "you're", "o'clock", "'tis",
    "rock'n'roll", "ma'am", "students'", "well-known", "e-mail", "café", "naïve", "façade", "résumé",
    "über", "piñata", "soufflé", "déjà", "fiancée", "\u201cquoted\u201d", "don\u2019t",
    "1999", "2024", "42", "3.14",
]  # fmt: skip
ONSETS = "- b c d f g h j k l m n p r s t v w y z b c d l m n p r s t bl br ch cr dr fl gr pl pr sh st th tr"
VOWELS = "a e i o u a e i o u y ai ea ee ie oa oo ou"
CODAS = "- - - - - - - - b d g k l m n p r s t x ck ft ld mp nd ng nk nt rd rk rs rt sh ss st th"
SYLLABLES = (0.2, 0.45, 0.27, 0.08)  # shares of made-up words with 1, 2, 3, 4 syllables
SEPARATORS = [  # (bytes after a word, weight)
    (b" ", 800), (b", ", 60), (b". ", 45), (b"\n", 55), (b"; ", 8), (b" -- ", 8), (b"? ", 6),
    (b"! ", 4), (b'" ', 4), (b"\xe2\x80\x94", 3), (b": ", 4), (b") (", 3),
]  # fmt: skip
FORMS = (0.86, 0.11, 0.03)  # lower, Capitalized, UPPER
# Word frequencies follow English's two-regime Zipf law: p(rank) ~ 1/rank up to the knee, then falling
# faster. That gives Heaps-like vocabulary growth: about 110k distinct words in 16 MB, 450k in 256 MB,
# 780k in 1 GB (before the numbers, which are uniform among the ranks).
VOCABULARY = 2_000_000
NUMBERS = 100_000
ZIPF_HEAD, ZIPF_TAIL, ZIPF_KNEE = 1.0, 1.8, 10_000
RANK_TABLE = 1 << 24  # ranks are drawn through a quantized inverse CDF of this many entries
CHUNK_WORDS = 1 << 21


def _vocabulary(rng: np.random.Generator) -> list[bytes]:
    """Common English words first (the most frequent ranks), then made-up words and numbers mixed."""
    onsets, codas = [c.strip("-") for c in ONSETS.split()], [c.strip("-") for c in CODAS.split()]
    syllables = [*sorted({o + v + c for o in onsets for v in VOWELS.split() for c in codas}), ""]
    count = VOCABULARY + VOCABULARY // 4  # some come out twice
    lengths = rng.choice(np.arange(1, 5), count, p=SYLLABLES)
    picks = rng.integers(0, len(syllables) - 1, (count, 4))
    picks[np.arange(4) >= lengths[:, None]] = len(syllables) - 1  # the empty syllable
    columns = [operator.itemgetter(*picks[:, k].tolist())(syllables) for k in range(4)]
    made: list[str] = list(map(operator.add, map(operator.add, columns[0], columns[1]), columns[2]))
    made = list(map(operator.add, made, columns[3]))
    made += SPECIAL + [str(n) for n in rng.integers(0, 10_000_000, NUMBERS).tolist()]
    words = dict.fromkeys(COMMON.split())
    words.update(dict.fromkeys(operator.itemgetter(*rng.permutation(len(made)).tolist())(made)))
    return [w.encode() for w in list(words)[:VOCABULARY]]


@dataclass
class TokenTable:
    """Every corpus token comes from here: 3 forms of each word, then the separators."""

    table: npt.NDArray[np.uint8]  # the entries' bytes, one after the other
    starts: npt.NDArray[np.int32]
    lengths: npt.NDArray[np.int32]
    ranks: npt.NDArray[np.int32]  # quantized inverse CDF of the Zipf distribution over words
    form_cdf: npt.NDArray[np.float64]
    sep_cdf: npt.NDArray[np.float64]
    words: int
    mean: float  # expected bytes per word and separator

    @classmethod
    def build(cls, rng: np.random.Generator) -> TokenTable:
        """The table for the vocabulary this generator makes."""
        vocab = _vocabulary(rng)
        entries = [w for word in vocab for w in (word, word[:1].upper() + word[1:], word.upper())]
        entries += [sep for sep, _ in SEPARATORS]
        lengths = np.repeat(np.array([len(w) for w in vocab], dtype=np.int32), 3)
        lengths = np.concatenate([lengths, np.array([len(sep) for sep, _ in SEPARATORS], dtype=np.int32)])
        starts = np.zeros(len(entries), dtype=np.int32)
        np.cumsum(lengths[:-1], out=starts[1:])
        rank = np.arange(1, len(vocab) + 1, dtype=np.float64)
        p_word = np.where(rank <= ZIPF_KNEE, 1 / rank, ZIPF_KNEE ** (ZIPF_TAIL - 1) * rank**-ZIPF_TAIL)
        p_word /= p_word.sum()
        ranks = np.searchsorted(np.cumsum(p_word), (np.arange(RANK_TABLE) + 0.5) / RANK_TABLE)
        weights = np.array([w for _, w in SEPARATORS], dtype=np.float64)
        p_sep = weights / weights.sum()
        mean = float(p_word @ lengths[: 3 * len(vocab) : 3]) + float(p_sep @ lengths[3 * len(vocab) :])
        return cls(
            np.frombuffer(b"".join(entries), dtype=np.uint8),
            starts,
            lengths,
            np.minimum(ranks, len(vocab) - 1).astype(np.int32),
            np.cumsum(FORMS) / sum(FORMS),
            np.cumsum(p_sep),
            len(vocab),
            mean,
        )

    def text(self, rng: np.random.Generator, words: int) -> npt.NDArray[np.uint8]:
        """`words` words drawn independently (rank, then form), each followed by a separator."""
        ids = np.empty(2 * words, dtype=np.int32)
        forms = np.minimum(np.searchsorted(self.form_cdf, rng.random(words)), 2).astype(np.int32)
        ids[0::2] = self.ranks[rng.integers(0, RANK_TABLE, words, dtype=np.int32)] * 3 + forms
        seps = np.searchsorted(self.sep_cdf, rng.random(words))
        ids[1::2] = 3 * self.words + np.minimum(seps, len(self.sep_cdf) - 1)
        # Copy the entries back to back without a per-byte Python loop: the byte index into the table
        # goes up by one inside an entry and jumps at each entry's start, so it is a cumulative sum.
        lens = self.lengths[ids]
        starts = self.starts[ids]
        ends = np.cumsum(lens, dtype=np.int64)
        step = np.ones(int(ends[-1]), dtype=np.int32)
        step[0] = starts[0]
        step[ends[:-1]] = starts[1:] - (starts[:-1] + lens[:-1]) + 1
        return self.table[np.cumsum(step, dtype=np.int32)]


_TABLE: TokenTable | None = None  # set before the generating processes fork


def _write_file(job: tuple[int, str, int]) -> str:
    """One corpus file of exactly `size` bytes, ending in a newline, from its own seed."""
    index, name, size = job
    assert _TABLE is not None
    rng = np.random.default_rng([SEED, index])
    written = 0
    with open(name, "wb") as f:
        while written < size:
            words = min(CHUNK_WORDS, int((size - written) / _TABLE.mean * 1.02) + 1000)
            chunk = _TABLE.text(rng, words)[: size - written]
            written += len(chunk)
            if written == size:
                chunk[-1] = ord("\n")
            f.write(chunk.tobytes())
    return name


def write_corpus(directory: Path, total: int, files: int = FILES) -> list[Path]:
    """`files` text files of `total` bytes together: the same bytes for the same sizes on every run.

    Two processes write the files (each from its own seed, so the split of work changes nothing)."""
    global _TABLE  # noqa: PLW0603 (read by the forked writers)
    if _TABLE is None:
        _TABLE = TokenTable.build(np.random.default_rng(SEED))
    directory.mkdir(parents=True, exist_ok=True)
    jobs = [
        (i, str(directory / f"part-{i:02d}.txt"), total // files + (1 if i < total % files else 0))
        for i in range(files)
    ]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return [Path(name) for name in pool.map(_write_file, jobs)]


# --- the counting functions (module level, so that every system can pickle them) --------------------


def numpy_counts(path: str) -> WordCounts:
    """The word counts of one file, packed (`words.count_words`, the kernel of swarm's wordcount map):
    words of up to 8 bytes as uint64 keys counted by a sort and run lengths, longer ones apart as
    'S' keys. The file is mapped, not read: `count_words` copies it a block at a time, so no buffer
    of the file's size is filled first."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return count_words(b"", max_len=MAX_WORD)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped, memoryview(mapped) as data:
            return count_words(data, max_len=MAX_WORD)


def merge_numpy(parts: Iterable[WordCounts]) -> tuple[npt.NDArray[np.bytes_], npt.NDArray[np.int64]]:
    """Sum per-file packed counts (still packed: the short words' keys are merged as integers) into
    the distinct words, sorted, and their counts."""
    return merge_word_counts(list(parts)).arrays()


def as_counts(words: npt.NDArray[np.bytes_], counts: npt.NDArray[np.int64]) -> Counts:
    """{word: count} for the check (untimed, like parsing swarm's output files)."""
    return dict(zip(words.tolist(), counts.tolist(), strict=True))


def python_counts(path: Path) -> collections.Counter[bytes]:
    """The plain-Python definition: `re.findall` over the lowered bytes."""
    return collections.Counter(WORD_RE.findall(path.read_bytes().lower()))


def line_words(line: str) -> list[str]:
    """A line's words for the Python tokenizers of Dask bag and Spark RDD (lowered after matching)."""
    return [w.lower() for w in STR_WORD_RE.findall(line)]


# --- results --------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One system at one size; `seconds` None when it did not run (`skipped` says why)."""

    system: str
    size: int
    seconds: float | None = None
    correct: bool | None = None
    runs: int = 0
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    #: (this system's seconds, the Pool program's seconds in the run right after it), per timed run
    pairs: list[tuple[float, float]] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        """MB/s of input."""
        return None if self.seconds is None else self.size / self.seconds / MB


def compare(counts: Counts, reference: Counts) -> str | None:
    """None when equal, else a short description of the differences."""
    if counts == reference:
        return None
    missing = reference.keys() - counts.keys()
    extra = counts.keys() - reference.keys()
    differ = [k for k in reference.keys() & counts.keys() if counts[k] != reference[k]]
    sample = [*sorted(missing)[:2], *sorted(extra)[:2], *sorted(differ)[:2]]
    shown = ", ".join(f"{k!r}: {counts.get(k)} vs {reference.get(k)}" for k in sample)
    return f"{len(missing)} words missing, {len(extra)} extra, {len(differ)} miscounted ({shown})"


def parse_key_value(text: bytes) -> Counts:
    """`word count` lines (swarm's output format)."""
    out: Counts = {}
    for line in text.splitlines():
        if line:
            word, _, count = line.rpartition(b" ")
            out[word] = int(count)
    return out


def parse_uniq(text: bytes) -> Counts:
    """`uniq -c` lines: right-aligned count, a space, the word (the empty word is dropped)."""
    out: Counts = {}
    for line in text.splitlines():
        count, _, word = line.lstrip().partition(b" ")
        if word:
            out[word] = int(count)
    return out


# --- the systems: each counts `files` and returns (seconds, counts) ----------------------------------


Run = Callable[[list[Path]], tuple[float, Counts]]


def run_counter(files: list[Path]) -> tuple[float, Counts]:
    """Single-process Python."""
    t0 = time.perf_counter()
    total: collections.Counter[bytes] = collections.Counter()
    for path in files:
        total.update(python_counts(path))
    return time.perf_counter() - t0, dict(total)


def run_pool(files: list[Path]) -> tuple[float, Counts]:
    """`multiprocessing.Pool(2)` of the numpy counting function, one file per task; the parent merges."""
    pool = multiprocessing.Pool(2)
    try:
        pool.map(abs, range(4))  # the workers exist before the clock starts
        t0 = time.perf_counter()
        merged = merge_numpy(pool.imap_unordered(numpy_counts, [str(p) for p in files]))
        return time.perf_counter() - t0, as_counts(*merged)
    finally:
        # Not `with Pool()`, whose terminate() SIGTERMs the workers: one killed while it held the task
        # queue's lock left the other blocked on it for good, and the run hung (as in `bench/tasks.py`).
        pool.close()
        pool.join()


def coreutils_runner(root: Path) -> Run:
    """The shell pipeline, output to a file in `root` (parsing it is not timed)."""

    def run(files: list[Path]) -> tuple[float, Counts]:
        out = root / "coreutils.out"
        inputs = " ".join(shlex.quote(str(p)) for p in files)
        pipeline = (
            f"cat {inputs} | tr -cs \"A-Za-z0-9'\" '\\n' | tr A-Z a-z "
            f"| sort -T {shlex.quote(str(root))} | uniq -c > {shlex.quote(str(out))}"
        )
        env = {**os.environ, "LC_ALL": "C"}
        t0 = time.perf_counter()
        subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], env=env, check=True)
        seconds = time.perf_counter() - t0
        counts = parse_uniq(out.read_bytes())
        out.unlink()
        return seconds, counts

    return run


class Swarm:
    """Two `swarm join --slots 1` nodes; each run is one `swarm submit mapreduce --app wordcount`, or with
    `client` one `swarm.Client.mapreduce` call on a client connected before the clock (as Dask's is)."""

    def __init__(
        self, root: Path, reduces: int, split_size: str, local: bool = True, client: bool = False
    ) -> None:
        self.root = root
        self.reduces = reduces
        self.split_size = split_size
        # The inputs and outputs live beside `root`. The nodes may use them there (tasks on this machine then
        # read splits and write outputs themselves) unless `local` is off: then every byte goes over HTTP.
        self.cluster = SwarmCluster(root / "cluster", slots=1, allowed_paths=[root.parent] if local else [])
        self.runs = 0
        self.reports: dict[int, list[str]] = {}
        self.by_client = client
        self.client: Client | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Swarm:
        (self.root / "cluster").mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:  # a client that cannot connect stops the cluster too
            stack.enter_context(self.cluster)
            if self.by_client:
                self.client = stack.enter_context(self.cluster.python_client())
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def __call__(self, files: list[Path], profile: bool = False) -> tuple[float, Counts]:
        self.runs += 1
        output = self.root / f"out-{self.runs}"
        profile_dir = self.root / f"profile-{self.runs}" if profile else None
        run = run_mapreduce(
            self.cluster,
            "wordcount",
            files,
            output,
            self.reduces,
            self.split_size,
            profile_dir,
            client=self.client,
        )
        size = sum(p.stat().st_size for p in files)
        if profile:
            self.reports[size] = self.reports.get(size, []) + profile_report(run)
        else:
            self.reports[size] = phase_report(run, slots=2)
        counts: Counts = {}
        for r in range(self.reduces):
            counts.update(parse_key_value((output / f"mr-out-{r}").read_bytes()))
        shutil.rmtree(output, ignore_errors=True)
        return run.seconds, counts


class Dask:
    """A LocalCluster of 2 worker processes with 1 thread each, for both Dask programs."""

    def __init__(self) -> None:
        from dask.distributed import Client

        self.cluster = dask_local_cluster()
        self.client = Client(self.cluster)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Stop the client and the cluster."""
        self.client.close()  # type: ignore[no-untyped-call]
        self.cluster.close()

    def run_map(self, files: list[Path]) -> tuple[float, Counts]:
        """`client.map` of the numpy counting function, one task per file; the driver merges."""
        t0 = time.perf_counter()
        futures = self.client.map(numpy_counts, [str(p) for p in files], pure=False)
        merged = merge_numpy(self.client.gather(futures))  # type: ignore[no-untyped-call]
        return time.perf_counter() - t0, as_counts(*merged)

    def run_bag(self, files: list[Path]) -> tuple[float, Counts]:
        """A bag of lines, a Python tokenizer, `frequencies()`."""
        import dask.bag as db

        t0 = time.perf_counter()
        bag = db.read_text([str(p) for p in files], blocksize=None)  # type: ignore[no-untyped-call]
        pairs = bag.map(line_words).flatten().frequencies().compute()
        seconds = time.perf_counter() - t0
        return seconds, {w.encode(): int(n) for w, n in pairs}


class Spark:
    """A `local[2]` SparkSession for both PySpark programs (its start-up is not timed)."""

    def __init__(self, root: Path) -> None:
        os.environ.setdefault("SPARK_LOCAL_IP", HOST)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        from pyspark.sql import SparkSession

        self.spark = (
            SparkSession.builder.master("local[2]")
            .appName("swarm-wordcount-bench")
            .config("spark.driver.host", HOST)
            .config("spark.driver.bindAddress", HOST)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.memory", "6g")
            .config("spark.local.dir", str(root / "spark"))
            .config("spark.sql.shuffle.partitions", "2")
            .getOrCreate()
        )
        self.spark.sparkContext.setLogLevel("ERROR")

    def close(self) -> None:
        """Stop the session and its JVM."""
        self.spark.stop()

    def run_rdd(self, files: list[Path]) -> tuple[float, Counts]:
        """The classic program: textFile, flatMap a Python tokenizer, reduceByKey, collect."""
        from operator import add

        sc = self.spark.sparkContext
        t0 = time.perf_counter()
        rdd = sc.textFile(",".join(str(p) for p in files), minPartitions=len(files))
        pairs = rdd.flatMap(line_words).map(lambda w: (w, 1)).reduceByKey(add).collect()
        seconds = time.perf_counter() - t0
        return seconds, {w.encode(): int(n) for w, n in pairs}

    def run_df(self, files: list[Path]) -> tuple[float, Counts]:
        """The DataFrame program: split on non-word characters, lower, explode, group, count."""
        from pyspark.sql import functions as F

        t0 = time.perf_counter()
        lines = self.spark.read.text([str(p) for p in files])
        words = lines.select(F.explode(F.split(lines.value, "[^A-Za-z0-9']+")).alias("w"))
        counted = words.where(words.w != "").groupBy(F.lower(words.w).alias("w")).count()
        rows = counted.collect()
        seconds = time.perf_counter() - t0
        return seconds, {row["w"].encode(): int(row["count"]) for row in rows}


# --- running and reporting ------------------------------------------------------------------------------


def measure(
    system: str,
    run: Run,
    corpora: dict[int, list[Path]],
    warmup: list[Path],
    reference: dict[int, Counts],
    args: argparse.Namespace,
    alternate: Run | None = None,
) -> list[Result]:
    """One warm-up on a small file, then per size the best of up to `--repeat` timed runs (fewer when
    they pass `--repeat-budget` seconds together); every run's counts are checked against the reference.
    With `alternate` (the Pool program), each timed run is followed by one of it (`Result.pairs`)."""
    results = []
    run(warmup)
    rate = None
    for size, files in corpora.items():
        result = Result(system, size)
        results.append(result)
        if rate is not None and size / MB / rate > args.max_seconds:
            result.skipped = (
                f"not run at {size_label(size)}: {rate:.1f} MB/s predicts {size / MB / rate:.0f} s "
                f"(over --max-seconds {args.max_seconds:.0f})"
            )
            say(f"  {result.skipped}")
            continue
        times: list[float] = []
        while len(times) < args.repeat and sum(times) < args.repeat_budget:
            try:
                seconds, counts = run(files)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [""])[-1][:200]
                result.skipped = f"FAILED: {type(exc).__name__}: {first}"
                say(f"  {size_label(size)}: {result.skipped}")
                break
            times.append(seconds)
            if alternate is not None:
                other_seconds, other_counts = alternate(files)
                result.pairs.append((seconds, other_seconds))
                if size in reference and compare(other_counts, reference[size]) is not None:
                    result.notes.append(f"the Pool program disagreed with itself at {size_label(size)}")
            if size not in reference:  # the first system measured (the Pool program) sets the reference
                reference[size] = counts
            problem = compare(counts, reference[size])
            result.correct = problem is None and result.correct is not False
            if problem:
                result.notes.append(f"WRONG at {size_label(size)}: {problem}")
            verdict = "counts match" if problem is None else f"WRONG: {problem}"
            rate_now = size / seconds / MB
            distinct = f"{len(counts):,} distinct words"
            paired = f"; the Pool program right after: {result.pairs[-1][1]:.1f} s" if alternate else ""
            say(f"  {size_label(size)}: {seconds:.1f} s, {rate_now:.1f} MB/s, {distinct}, {verdict}{paired}")
        if times:
            result.seconds = min(times)
            result.runs = len(times)
            rate = result.rate
    return results


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(results: list[Result], sizes: list[int], swarm_reports: dict[str, dict[int, list[str]]]) -> bool:
    """The table, each swarm system's ratio to every other system, the goals; True when both swarm
    systems met both goals."""
    by = {(r.system, r.size): r for r in results}
    systems = [s for s in SYSTEMS if any(r.system == s for r in results)]
    width = max(len(LABELS[s]) for s in systems) + 2
    say("")
    say(f"Word count, {FILES} files per size; MB/s of input (10**6 bytes per second of wall time)")
    say("best of the runs shown in 'n'; 's' is that run's wall time")
    head = f"{'system':<{width}}" + "".join(f"{size_label(n) + ' MB/s':>14}{'s':>8}{'n':>3}" for n in sizes)
    say(head)
    say("-" * len(head))
    for s in systems:
        cells = []
        for n in sizes:
            r = by.get((s, n))
            if r is None or r.seconds is None:
                cells.append(f"{'-':>14}{'-':>8}{'-':>3}")
            else:
                mark = "" if r.correct else " WRONG"
                cells.append(f"{_fmt(r.rate, '.1f') + mark:>14}{_fmt(r.seconds, '.1f'):>8}{r.runs:>3}")
        say(f"{LABELS[s]:<{width}}{''.join(cells)}")
    for s in systems:
        skipped = list(dict.fromkeys(r.skipped for r in results if r.system == s and r.skipped))
        for text in [*skipped, *(note for r in results if r.system == s for note in r.notes)]:
            say(f"  {LABELS[s]}: {text}")
    met_all = True
    for system in [s for s in SWARMS if s in systems]:
        for n in sizes:
            met_all = _swarm_goals(by, systems, system, n, width, swarm_reports.get(system, {})) and met_all
    return met_all


def _swarm_goals(
    by: dict[tuple[str, int], Result],
    systems: list[str],
    system: str,
    n: int,
    width: int,
    reports: dict[int, list[str]],
) -> bool:
    """One swarm system's ratios and goals at one size; True when it met them."""
    swarm = by.get((system, n))
    say("")
    if swarm is None or swarm.rate is None:
        say(f"{size_label(n)}: {LABELS[system]} did not run")
        return False
    say(f"{size_label(n)}: {LABELS[system]} {swarm.rate:.1f} MB/s; swarm / other (higher is better):")
    for s in systems:
        other = by.get((s, n))
        if s in SWARMS or other is None or other.rate is None:
            continue
        say(f"  vs {LABELS[s]:<{width}} x{swarm.rate / other.rate:.2f}")
    frameworks = [by[(s, n)] for s in FRAMEWORKS if (s, n) in by and by[(s, n)].rate is not None]
    beaten = all(swarm.rate > f.rate for f in frameworks if f.rate is not None)
    pool = by.get(("pool", n))
    best_share = swarm.rate / pool.rate if pool is not None and pool.rate else None
    paired = sorted(other / own for own, other in swarm.pairs)
    share = statistics.median(paired) if paired else best_share
    if paired:
        shown = ", ".join(f"x{r:.2f}" for r in paired)
        say(f"  vs the Pool program run right after each run: {shown}; median x{share:.2f}")
    reached = share is not None and share >= POOL_SHARE_TARGET
    correct = bool(swarm.correct)
    ran = ", ".join(LABELS[f.system] for f in frameworks) or "none ran"
    if not frameworks:
        beaten = False
        say("  goal: beat every framework: NOT CHECKED (no framework ran)")
    else:
        say(f"  goal: beat every framework ({ran}): {'MET' if beaten else 'MISSED'}")
    judged = "median of the alternated pairs" if paired else "best against best"
    say(
        f"  goal: >= {POOL_SHARE_TARGET:.0%} of the Pool(2) numpy figure ({judged}): "
        f"{'MET' if reached else 'MISSED'} ({_fmt(share, '.0%')}; best against best "
        f"{_fmt(best_share, '.0%')})"
    )
    if not correct:
        say("  swarm's counts are WRONG")
    for line in reports.get(n, []):
        say(f"  {line}")
    return beaten and reached and correct


def _systems(text: str) -> set[str]:
    chosen = {s.strip() for s in text.split(",") if s.strip()}
    unknown = chosen - set(SYSTEMS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown system(s) {sorted(unknown)}; known: {', '.join(SYSTEMS)}")
    return chosen


def _sizes(text: str) -> list[int]:
    return [parse_size(t) for t in text.split(",") if t.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sizes", type=_sizes, default=[256 << 20, 1 << 30], help="corpus sizes (default 256M,1G)"
    )
    p.add_argument("--skip", type=_systems, default=set(), help=f"systems to leave out: {','.join(SYSTEMS)}")
    p.add_argument("--only", type=_systems, default=None, help="run just these systems (pool always runs)")
    p.add_argument("--reduces", type=int, default=2, help="swarm's --reduces (default 2)")
    p.add_argument(
        "--split-size", default="", help="swarm's --split-size (default: none, the submitter picks one)"
    )
    p.add_argument(
        "--no-local",
        action="store_true",
        help="the nodes may not read inputs or write outputs in place: all data through the data servers",
    )
    p.add_argument(
        "--profile", action="store_true", help="after the timed runs, one more swarm run under py-spy"
    )
    p.add_argument("--repeat", type=int, default=3, help="timed runs per system and size, best kept (3)")
    p.add_argument(
        "--repeat-budget",
        type=float,
        default=60.0,
        help="no further repeat once a system's runs at a size took this long together (default 60)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=300.0,
        help="skip a system at a size where its rate at the previous size predicts more (default 300)",
    )
    return p


def _start(system: str, root: Path, args: argparse.Namespace) -> tuple[Run, Callable[[], None]] | str:
    """The system's run function and how to stop it, or why it cannot run."""
    if system == "pool":
        return run_pool, lambda: None
    if system == "counter":
        return run_counter, lambda: None
    if system == "coreutils":
        return coreutils_runner(root), lambda: None
    if system in SWARMS:
        swarm = Swarm(
            root / system, args.reduces, args.split_size, not args.no_local, client=system == "swarm-client"
        ).__enter__()
        return swarm, lambda: swarm.__exit__(None, None, None)
    if system.startswith("dask"):
        try:
            dask = Dask()
        except Exception as exc:  # not installed, or does not start
            return f"skipped: {type(exc).__name__}: {exc} (pip install 'dask[distributed]')"
        return (dask.run_map if system == "dask-map" else dask.run_bag), dask.close
    try:
        spark = Spark(root)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return f"skipped: {type(exc).__name__}: {first} (pip install pyspark; needs Java 17+)"
    return (spark.run_rdd if system == "spark-rdd" else spark.run_df), spark.close


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the corpora, run every system that is not skipped, print the report."""
    args = _parser().parse_args(argv)
    chosen = set(SYSTEMS) if args.only is None else args.only | {"pool"}
    chosen -= args.skip - {"pool"}  # the Pool program is the reference every count is checked against
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    sizes = sorted(set(args.sizes))
    results: list[Result] = []
    swarm_reports: dict[str, dict[int, list[str]]] = {}
    try:
        with sigterm_as_interrupt(), scratch_dir("swarm-wordcount-") as root:
            corpora = {}
            for size in sizes:
                t0 = time.perf_counter()
                corpora[size] = write_corpus(root / f"corpus-{size_label(size)}", size)
                say(f"corpus {size_label(size)}: {FILES} files written in {time.perf_counter() - t0:.1f} s")
            warmup = write_corpus(root / "warmup", 1 << 20, files=2)
            os.sync()  # no writeback of the corpus competes with the timed runs
            reference: dict[int, Counts] = {}
            # The Pool program runs first: its counts are the reference every other system must match.
            for system in [s for s in dict.fromkeys(("pool", *SYSTEMS)) if s in chosen]:
                say(f"{LABELS[system]} ...")
                started = _start(system, root, args)
                if isinstance(started, str):
                    say(f"  {started}")
                    results += [Result(system, n, skipped=started) for n in sizes]
                    continue
                run, stop = started
                try:
                    alternate = run_pool if system in SWARMS else None
                    results += measure(system, run, corpora, warmup, reference, args, alternate)
                    if isinstance(run, Swarm):
                        if args.profile:
                            say("  profiling one more run per size with py-spy ...")
                            for files in corpora.values():
                                run(files, profile=True)
                        swarm_reports[system] = run.reports
                finally:
                    stop()
                if system == "pool":
                    say(f"  reference: {', '.join(f'{len(c):,} distinct words' for c in reference.values())}")
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        return 130
    met = report(results, sizes, swarm_reports)
    failed = any(r.correct is False or (r.skipped or "").startswith("FAILED") for r in results)
    return 1 if failed else (0 if met else 3)


if __name__ == "__main__":
    sys.exit(main())
