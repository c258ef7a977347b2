"""Merging runs that are each sorted by key: the step between a reducer's fetched runs and its reduce.

The merge is a permutation computed once over the keys; values move only when a slice of the merge is
asked for, so a reducer can take its output a chunk at a time instead of holding a merged copy. A reducer
whose reduce only combines partial results (`combine_runs`) skips the merge of the records altogether.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import numpy as np

from swarm.mapreduce.kernels import Keys, Values, aggregate, check_keys, combine, key_order

__all__ = ["MergedRuns", "combine_runs", "merge_sorted"]


def _live(runs: list[tuple[Keys, Values]]) -> list[tuple[Keys, Values]]:
    """The runs that hold records (or the first run, if none does), each checked: an empty run's arrays
    may have a default type, which only the others can correct."""
    if not runs:
        raise ValueError("merging needs at least one run")
    for keys, values in runs:
        check_keys(keys)
        if len(keys) != len(values):
            raise ValueError(f"a run has {len(keys)} keys but {len(values)} values")
    live = [run for run in runs if len(run[0])] or runs[:1]
    shapes = {v.shape[1:] for _, v in live}
    if len(shapes) > 1:
        raise ValueError(f"runs' values have different shapes per record: {sorted(shapes)}")
    return live


class MergedRuns:
    """Runs that are each sorted by key, merged: the merged `keys`, and the merged values of any slice.

    Equal keys keep run order, then row order. The values are not materialized as a whole: `values`
    places the rows of a slice, and `chunks` walks the merge a slice at a time through one reused
    buffer, so a reducer holds its runs plus one slice, not its runs plus a merged copy of them (which
    for a sort reducer is as large as its whole input).

    Why concatenate + `key_order`: numpy has no k-way merge. Its stable argsort (timsort) finds the
    runs and merges them in O(n log k), which beat a tree of pairwise `np.searchsorted` merges by 2-3x
    (4-16 runs of 1M 'S20' keys: those pay log2(n) string comparisons per key per level); `key_order`
    is faster still (17 runs, 5.4M 'S10' keys: 110 ms against timsort's 250 ms), and told that its keys
    are runs (`runs=True`) it sorts its packed keys with that timsort, which merges them: 2.4x faster
    again on 17 runs of 'S10' keys.
    A stable sort keeps each run's rows in their order, so each run's rows go to ascending places in
    the merge, and a slice of the merge takes a contiguous range of every run's rows.
    """

    def __init__(self, runs: list[tuple[Keys, Values]]) -> None:
        live = _live(runs)
        self.row_shape: tuple[int, ...] = live[0][1].shape[1:]
        self.dtype: np.dtype[Any] = np.result_type(*(v for _, v in live))
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.row_shape, dtype=np.int64))
        self._values = [v for _, v in live]
        sizes = [len(v) for v in self._values]
        bases = np.cumsum([0, *sizes])
        if len(live) == 1:
            self.keys: Keys = live[0][0]
            self._places = [np.arange(sizes[0], dtype=np.intp)]
            return
        keys = np.concatenate([k for k, _ in live])
        if all(a[0][-1] <= b[0][0] for a, b in pairwise(live)):  # range partitions: already in order
            self.keys = keys
            self._places = [np.arange(lo, hi, dtype=np.intp) for lo, hi in pairwise(bases.tolist())]
            return
        order = key_order(keys, runs=True)
        where = np.empty(len(order), dtype=np.intp)
        where[order] = np.arange(len(order), dtype=np.intp)
        self.keys = np.take(keys, order)
        self._places = [where[lo:hi] for lo, hi in pairwise(bases.tolist())]

    def __len__(self) -> int:
        return len(self.keys)

    def values(self, start: int, stop: int, out: Values | None = None) -> Values:
        """The merged values of rows [start, stop), into `out` (at least that many rows) if given."""
        n = stop - start
        out = np.empty((n, *self.row_shape), dtype=self.dtype) if out is None else out[:n]
        for values, places in zip(self._values, self._places, strict=True):
            lo, hi = (int(i) for i in np.searchsorted(places, (start, stop)))
            if lo == hi:
                continue
            first, last = int(places[lo]) - start, int(places[hi - 1]) - start
            if last - first == hi - lo - 1:  # a stretch of the merge that this run fills alone: a slice copy
                out[first : last + 1] = values[lo:hi]
            else:
                out[places[lo:hi] - start] = values[lo:hi]
        return out

    def all_values(self) -> Values:
        """Every merged value; a lone run's own array rather than a copy of it."""
        return self._values[0] if len(self._values) == 1 else self.values(0, len(self))

    def chunks(self, rows: int) -> Iterator[tuple[Keys, Values]]:
        """The merge as consecutive (keys, values) slices of about `rows` rows, every key's rows in one
        slice (a slice grows to the end of its last key). A slice's values live in a buffer that the
        next slice overwrites: consume each before asking for the next."""
        if rows < 1:
            raise ValueError(f"rows must be at least 1, got {rows}")
        n = len(self.keys)
        buffer: Values | None = None
        start = 0
        while start < n:
            stop = min(start + rows, n)
            if stop < n:  # the slice ends where its last key does
                stop = int(np.searchsorted(self.keys, self.keys[stop - 1], side="right"))
            if buffer is None or len(buffer) < stop - start:
                buffer = np.empty((max(rows, stop - start), *self.row_shape), dtype=self.dtype)
            yield self.keys[start:stop], self.values(start, stop, buffer)
            start = stop


def merge_sorted(runs: list[tuple[Keys, Values]]) -> tuple[Keys, Values]:
    """Merge runs that are each sorted by key into one sorted run; equal keys keep run order, then row
    order (see `MergedRuns`). A single non-empty run is returned as it is."""
    merged = MergedRuns(runs)
    return merged.keys, merged.all_values()


def combine_runs(runs: list[tuple[Keys, Values]], op: str) -> tuple[Keys, Values]:
    """``combine(*merge_sorted(runs), op)``, equal to the bit, without merging the records first.

    Why: when every key's records are reduced to one value anyway, ordering the records by a hash of
    their key (`aggregate`) and then only the distinct keys by key costs less than merging every record
    in key order (16 word count runs, 1.57M records, 169k words: 157-203 ms of CPU against 223-226).
    Equal keys still meet in run order, then row order, as in the merge, so floating-point sums come
    out the same. Memory is about the same as the merge's: two copies of the keys at the peak.
    """
    live = _live(runs)
    if len(live) == 1:
        return combine(*live[0], op)
    return aggregate(np.concatenate([k for k, _ in live]), np.concatenate([v for _, v in live]), op)
