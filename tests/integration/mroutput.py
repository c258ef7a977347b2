"""Checks of a MapReduce job's output files, shared by the integration and chaos tests."""

from __future__ import annotations

import collections
import re
from pathlib import Path


def fnv1a(key: bytes) -> int:
    """64-bit FNV-1a, written out as documented: the partitioner's hash, computed apart from the engine."""
    h = 14695981039346656037
    for byte in key:
        h = ((h ^ byte) * 1099511628211) % 2**64
    return h


def split_per_file(inputs: list[Path]) -> tuple[str, str]:
    """`--split-size` that holds any one of `inputs` but no two: one map per file. Without it the
    planner packs small files into one split (`plan.plan_splits`)."""
    sizes = [path.stat().st_size for path in inputs]
    assert 2 * min(sizes) > max(sizes), sizes
    return ("--split-size", str(max(sizes)))


def read_outputs(out: Path, reduces: int) -> list[list[tuple[str, str]]]:
    """The `key value` lines of `mr-out-0` ... `mr-out-<reduces-1>`, file by file."""
    files = []
    for r in range(reduces):
        lines = (out / f"mr-out-{r}").read_bytes().decode().splitlines()
        files.append([tuple(line.split(" ", 1)) for line in lines])  # type: ignore[misc]
    return files


def check_partitioned(files: list[list[tuple[str, str]]]) -> dict[str, str]:
    """Every file sorted by key bytes, every key in one file only, the one its hash names; merged."""
    merged: dict[str, str] = {}
    for r, pairs in enumerate(files):
        keys = [k for k, _ in pairs]
        assert keys == sorted(keys, key=str.encode), f"mr-out-{r} is not sorted"
        for key, value in pairs:
            assert key not in merged, f"{key!r} in two files"
            assert fnv1a(key.encode()) % len(files) == r, f"{key!r} in mr-out-{r}, the wrong file"
            merged[key] = value
    return merged


def word_counts(paths: list[Path]) -> dict[str, int]:
    """The wordcount app's definition of a word, counted sequentially."""
    counts: collections.Counter[str] = collections.Counter()
    for p in paths:
        counts.update(w.decode() for w in re.findall(rb"[a-z0-9']+", p.read_bytes().lower()))
    return dict(counts)
