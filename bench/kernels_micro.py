"""Micro-benchmarks of the MapReduce kernels, with the alternatives they were chosen over.

    python bench/kernels_micro.py            # 64 MB of text, 1M keys, merges of 4/8/16 runs of 1M keys
    python bench/kernels_micro.py --quick    # a tenth of the sizes

Prints one line per measurement (best of `--repeat` runs, so allocation warm-up is not counted):
tokenizer MB/s next to `re.findall` and `bytes.split`, a wordcount map side (sort then combine,
hash-aggregate then sort the distinct words, or the packed `count_words` from the text), hash and
split rates, group/combine, the two candidate k-way merges (the kernel uses the faster: concatenate +
stable argsort), and run file write/read rates with and without compression. Everything is
generated from a fixed seed.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from swarm.mapreduce.kernels import (
    Keys,
    aggregate,
    combine,
    group_runs,
    hash_keys,
    split_sorted,
)
from swarm.mapreduce.merge import merge_sorted
from swarm.mapreduce.runs import read_run, write_run
from swarm.mapreduce.words import count_words, tokenize_words

Pair = tuple[Keys, npt.NDArray[Any]]


def best(fn: Callable[[], Any], repeat: int) -> float:
    """Seconds of the fastest of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_text(nbytes: int, rng: np.random.Generator) -> bytes:
    """Zipf-distributed words of mixed case and length, punctuation, some non-ASCII; `nbytes` long."""
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789'", dtype=np.uint8)
    vocab = [bytes(letters[rng.integers(0, len(letters), n)]) for n in rng.integers(1, 12, 50_000)]
    seps = [b" ", b" ", b" ", b", ", b". ", b"\n", b" -- ", "é ".encode()]
    ranks = rng.zipf(1.2, 1_000_000) % len(vocab)
    chosen = rng.integers(0, len(seps), len(ranks))
    block = b"".join(vocab[r] + seps[s] for r, s in zip(ranks.tolist(), chosen.tolist(), strict=True))
    return (block * (nbytes // len(block) + 1))[:nbytes]


def make_keys(n: int, rng: np.random.Generator) -> Keys:
    """`n` word-like keys (1-15 lowercase letters) in an S20 array, many repeated."""
    matrix = np.zeros((n, 20), dtype=np.uint8)
    lengths = rng.integers(1, 16, n)
    for j in range(15):
        live = lengths > j
        matrix[live, j] = rng.integers(97, 123, int(live.sum()))
    return matrix.view("S20").reshape(-1)


def pairwise_merge(runs: list[Pair]) -> Pair:
    """The alternative to `merge_sorted`: a tree of two-way merges placed by `np.searchsorted`."""
    while len(runs) > 1:
        merged = []
        for (ka, va), (kb, vb) in zip(runs[0::2], runs[1::2], strict=False):
            at_b = np.searchsorted(ka, kb, side="right") + np.arange(len(kb))
            is_b = np.zeros(len(ka) + len(kb), dtype=bool)
            is_b[at_b] = True
            keys = np.empty(len(is_b), dtype=np.promote_types(ka.dtype, kb.dtype))
            values = np.empty(len(is_b), dtype=np.result_type(va, vb))
            keys[is_b], keys[~is_b], values[is_b], values[~is_b] = kb, ka, vb, va
            merged.append((keys, values))
        runs = merged + ([runs[-1]] if len(runs) % 2 else [])
    return runs[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is shown)")
    args = parser.parse_args()
    scale, repeat = (10 if args.quick else 1), args.repeat
    rng = np.random.default_rng(42)

    text = make_text((64 << 20) // scale, rng)
    mb = len(text) / 1e6
    words = tokenize_words(text)
    rate = mb / best(partial(tokenize_words, text), repeat)
    print(f"tokenize_words   {rate:7.0f} MB/s   ({len(words):,} words)")
    pattern = re.compile(rb"[a-z0-9']+")
    print(f"  re.findall     {mb / best(lambda: pattern.findall(text.lower()), 1):7.0f} MB/s   (reference)")
    table = bytes(c | 0x20 if 65 <= c <= 90 else c if chr(c).isalnum() or c == 39 else 32 for c in range(128))
    table += b" " * 128
    print(f"  bytes.split    {mb / best(lambda: np.array(text.translate(table).split()), 1):7.0f} MB/s")

    ones = np.ones(len(words), dtype=np.int64)

    def sort_then_combine() -> None:
        for part_keys, part_values in split_sorted(words, ones, 8):
            combine(part_keys, part_values, "sum")

    def aggregate_then_split() -> None:
        split_sorted(*aggregate(words, ones, "sum"), 8)

    for name, fn in [
        ("split_sorted+combine", sort_then_combine),
        ("aggregate+split", aggregate_then_split),
        ("text->count_words+split", lambda: split_sorted(*count_words(text).arrays(), 8)),  # tokenizes too
    ]:
        secs = best(fn, repeat)
        print(f"map-side {name:<23} {len(words) / secs / 1e6:5.1f} Mwords/s ({secs * 1e3:.0f} ms, R=8)")

    n = 1_000_000 // scale
    keys = make_keys(n, rng)
    values = np.ones(n, dtype=np.int64)
    print(
        f"hash_keys        {n / best(lambda: hash_keys(keys), repeat) / 1e6:7.1f} Mkeys/s (S20, 1-15 bytes)"
    )
    wide = keys.astype("S64")
    print(f"  same keys S64  {n / best(lambda: hash_keys(wide), repeat) / 1e6:7.1f} Mkeys/s")
    for reducers in (8, 64):
        secs = best(partial(split_sorted, keys, values, reducers), repeat)
        print(f"split_sorted R={reducers:<3} {n / secs / 1e6:5.1f} Mkeys/s   ({secs * 1e3:.0f} ms for {n:,})")
    lex = best(lambda: np.lexsort((keys, hash_keys(keys) % np.uint64(8))), repeat)
    print(f"  lexsort R=8    {n / lex / 1e6:7.1f} Mkeys/s   (the alternative)")
    ordered = np.sort(keys, kind="stable")
    print(f"group_runs       {n / best(lambda: group_runs(ordered), repeat) / 1e6:7.1f} Mkeys/s")
    print(f"combine sum      {n / best(lambda: combine(ordered, values, 'sum'), repeat) / 1e6:7.1f} Mkeys/s")

    for count in (4, 8, 16):
        runs: list[Pair] = []
        for i in range(count):
            run_keys = np.sort(keys[rng.integers(0, n, n)], kind="stable")
            runs.append((run_keys, np.arange(n, dtype=np.int64) + i * n))
        concat = best(partial(merge_sorted, runs), repeat)
        pairwise = best(partial(pairwise_merge, runs), repeat)
        total = count * n / 1e6
        print(
            f"merge {count:>2} x {n:,}: concat+stable argsort {total / concat:5.1f} Mkeys/s, "
            f"pairwise searchsorted {total / pairwise:5.1f} Mkeys/s"
        )

    with tempfile.TemporaryDirectory() as directory:
        size = (keys.nbytes + values.nbytes) / 1e6
        for compress in (False, True):
            path = Path(directory) / "bench.run"
            write = best(partial(write_run, path, ordered, values, compress), repeat)
            info = write_run(path, ordered, values, compress)
            read = best(partial(read_run, info.path, info.checksum), repeat)
            print(
                f"run {'zlib-1' if compress else 'raw   '}       write {size / write:5.0f} MB/s, "
                f"read+verify {size / read:5.0f} MB/s, file {info.nbytes / 1e6:.1f} MB of {size:.1f} MB"
            )


if __name__ == "__main__":
    main()
