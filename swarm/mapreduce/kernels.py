"""The MapReduce hot path as numpy kernels over (keys, values) arrays.

Every step between a map's output and a reduce's input (hash, partition, sort, group, combine) is
here, and the merge of sorted runs is in `merge`, as whole-array numpy operations: Python loops run
over byte columns, partitions or chunks, never over records, so the per-record cost is paid in C. The
words of a text (the word-counting apps' map) are in `words`.

Keys are fixed-width byte strings (dtype ``'S<n>'``) holding UTF-8. numpy pads them with NUL bytes and
strips trailing NULs when reading them back, so ``b"a"`` and ``b"a\\x00"`` are the same key: keys must not
end in NUL (interior NULs are kept and count). Values are numpy arrays with one row per key: numeric for
the combiners, or ``'S'``/``'U'`` strings for the record API.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "FNV_OFFSET",
    "FNV_PRIME",
    "MERGE_OP",
    "OPS",
    "Keys",
    "Op",
    "Values",
    "aggregate",
    "check_keys",
    "combine",
    "group_runs",
    "hash_keys",
    "key_order",
    "partition_of",
    "range_partition_of",
    "sample_boundaries",
    "split_sorted",
]

Keys = npt.NDArray[np.bytes_]
Values = npt.NDArray[Any]
Int64s = npt.NDArray[np.int64]
Op = Literal["sum", "count", "min", "max", "mean"]
OPS: tuple[str, ...] = ("sum", "count", "min", "max", "mean")
# How partial results of each associative combiner are combined again (a count of counts is their sum).
MERGE_OP: dict[str, Op] = {"sum": "sum", "count": "sum", "min": "min", "max": "max"}

# 64-bit FNV-1a (http://www.isthe.com/chongo/tech/comp/fnv/): h = OFFSET; for each byte b:
# h = ((h ^ b) * PRIME) mod 2**64. Fixed constants and unsigned wrap-around make it identical on every
# platform and every run, unlike Python's salted hash(): a key lands on the same reducer wherever mapped.
FNV_OFFSET = 14695981039346656037
FNV_PRIME = 1099511628211
# PRIME is odd, so it is invertible mod 2**64: hashing k padding NULs too and then multiplying by
# PRIME**-k undoes them exactly, which lets the column loop run without a per-record length mask.
_FNV_PRIME_INV = pow(FNV_PRIME, -1, 1 << 64)
_CHUNK = 1 << 16  # records per block: the block's hash array stays in cache across the column loop
# key_order: below this many keys numpy's string argsort beats the fixed cost of the uint64 passes, and
# with fewer key bits than _MIN_DIGIT left per uint64 a round would resolve too little to pay off.
_SMALL_SORT = 1 << 10
_MIN_DIGIT = 8
# Sums accumulate wide, so that 8-bit counts or float32 values neither overflow nor lose precision.
_SUM_DTYPES = {"b": np.int64, "i": np.int64, "u": np.uint64, "f": np.float64, "c": np.complex128}


def check_keys(keys: Keys) -> Keys:
    """`keys` as a contiguous 1-D 'S' array; TypeError for anything else."""
    if keys.dtype.kind != "S" or keys.ndim != 1:
        raise TypeError(f"keys must be a 1-D array of bytes (dtype 'S'), got {keys.dtype} ndim {keys.ndim}")
    return np.ascontiguousarray(keys)


def _byte_matrix(keys: Keys) -> npt.NDArray[np.uint8]:
    """The (n, width) uint8 view of contiguous keys, NUL-padded to the width."""
    return keys.view(np.uint8).reshape(len(keys), keys.dtype.itemsize)


def hash_keys(keys: Keys) -> npt.NDArray[np.uint64]:
    """64-bit FNV-1a of each key's bytes (without the NUL padding), bit for bit the textbook definition.

    Why this shape: FNV-1a is sequential over a key's bytes, so the loop runs over byte *columns*, each
    step one xor and one multiply over a block of records. Every record is hashed through the full
    width of its block (padding included) and then corrected by PRIME**-(padding), which is exact
    arithmetic mod 2**64 and cheaper than masking short keys at every column. Cost is linear in the
    array's bytes (records x width).
    """
    keys = check_keys(keys)
    n, width = len(keys), keys.dtype.itemsize
    out = np.full(n, FNV_OFFSET, dtype=np.uint64)
    if n == 0 or width == 0:
        return out
    matrix = _byte_matrix(keys)
    lengths = np.strings.str_len(keys)
    prime = np.uint64(FNV_PRIME)
    undo = np.full(width + 1, _FNV_PRIME_INV, dtype=np.uint64)  # undo[k] = PRIME**-k mod 2**64
    undo[0] = 1
    np.multiply.accumulate(undo, out=undo)
    for lo in range(0, n, _CHUNK):
        h = out[lo : lo + _CHUNK]
        block = matrix[lo : lo + _CHUNK]
        lens = lengths[lo : lo + _CHUNK]
        cols = int(lens.max())
        for j in range(cols):
            np.bitwise_xor(h, block[:, j], out=h)
            np.multiply(h, prime, out=h)
        np.multiply(h, undo[cols - lens], out=h)
    return out


def _padded_to_8(keys: Keys) -> Keys:
    """Keys at least 8 bytes wide: narrower ones NUL-padded to 'S8', which numpy orders and compares
    exactly as the originals (it pads with NULs itself)."""
    n, width = len(keys), keys.dtype.itemsize
    if width >= 8:
        return keys
    padded = np.zeros((n, 8), dtype=np.uint8)
    padded[:, :width] = _byte_matrix(keys)
    return padded.view("S8").reshape(-1)


def _words(keys: Keys) -> list[npt.NDArray[np.uint64]]:
    """Each contiguous key (at least 8 bytes wide) as little-endian 8-byte words, strided views into the
    keys; the last word overlaps the one before it when the width is no multiple of 8."""
    n, width = len(keys), keys.dtype.itemsize
    offsets = [*range(0, width - 7, 8), *([width - 8] if width % 8 else [])]
    return [np.ndarray((n,), dtype="<u8", buffer=keys, offset=offset, strides=(width,)) for offset in offsets]


def _next_differs(keys: Keys) -> npt.NDArray[np.bool_]:
    """For each of contiguous keys but the last, whether it differs from the next one.

    Why: numpy compares 'S' arrays byte by byte (41 ms for 2.2M sorted 'S24' words, mostly equal
    neighbours); as 8-byte words it takes 8 ms. The last word overlaps the one before it when the
    width is no multiple of 8, which changes nothing for equality.
    """
    n, width = len(keys), keys.dtype.itemsize
    if width < 8 or n < 2:
        bytewise: npt.NDArray[np.bool_] = keys[1:] != keys[:-1]
        return bytewise
    differs = np.zeros(n - 1, dtype=bool)
    step = np.empty(n - 1, dtype=bool)
    for word in _words(keys):
        np.not_equal(word[1:], word[:-1], out=step)
        differs |= step
    return differs


def _check_reducers(reducers: int) -> None:
    if reducers < 1:
        raise ValueError(f"reducers must be at least 1, got {reducers}")


def partition_of(keys: Keys, reducers: int) -> Int64s:
    """The reducer of each key: ``hash_keys(keys) % reducers``, so equal keys always meet."""
    _check_reducers(reducers)
    return (hash_keys(keys) % np.uint64(reducers)).astype(np.int64)


def range_partition_of(keys: Keys, boundaries: Keys) -> Int64s:
    """Reducer of each key for range partitioning: partition i holds boundaries[i-1] <= key < boundaries[i].

    `boundaries` must be sorted (R-1 keys for R reducers, see `sample_boundaries`); the outputs of
    reducers 0..R-1 concatenated are then globally sorted.
    """
    check_keys(keys)
    check_keys(boundaries)
    return np.searchsorted(boundaries, keys, side="right").astype(np.int64)


def sample_boundaries(sample_keys: Keys, reducers: int) -> Keys:
    """R-1 split points at the quantiles of a sample, so that reducers get about equal shares.

    Fewer distinct sample keys than reducers give repeated boundaries (and some empty partitions);
    an empty sample gives no boundaries, so every key goes to reducer 0.
    """
    _check_reducers(reducers)
    ordered = np.sort(check_keys(sample_keys))
    if len(ordered) == 0:
        return ordered
    picks = (np.arange(1, reducers, dtype=np.int64) * len(ordered)) // reducers
    return np.take(ordered, picks)


def _stable_sort_order(parts: Int64s, reducers: int) -> npt.NDArray[np.intp]:
    """Stable order of partition numbers; in 8 or 16 bits numpy's stable sort is a linear radix sort."""
    if reducers <= 1 << 8:
        return np.argsort(parts.astype(np.uint8), kind="stable")
    if reducers <= 1 << 16:
        return np.argsort(parts.astype(np.uint16), kind="stable")
    return np.argsort(parts, kind="stable")


def key_order(keys: Keys, *, runs: bool = False) -> npt.NDArray[np.intp]:
    """The stable sort order of keys: exactly ``np.argsort(keys, kind="stable")``, several times faster.

    Why: numpy's stable argsort of strings is a comparison sort (timsort): 1135 ms for 5.4M 'S10'
    keys on the reference machine (2 cores, AVX-512), while ``np.sort`` of 5.4M uint64 is a SIMD
    quicksort taking 49 ms (an argsort of the same uint64 still takes 277 ms, a stable one 666 ms). So
    the sort runs on one uint64 per key: its high bits hold the key's first bits, read big-endian so
    that integer order is byte order (keys narrower than 8 bytes are NUL-padded, as numpy compares
    them), and its low ``(n-1).bit_length()`` bits the key's index, which gives the permutation back
    and makes ties come out in index order, i.e. stably. 5.4M random 'S10' keys take ~100 ms.

    Keys whose first bits tie but which differ further on are refined in rounds: a round sorts only
    the records of such groups, by (group, the next key bits, index) packed the same way, and a group
    whose tied records turn out to be equal keys is final. Bits that all remaining records share are
    skipped (a common prefix costs no rounds). When the group and index bits leave too few key bits,
    the remaining records are sorted as strings. Inputs too small to pay for the fixed cost, or too
    large to leave key bits beside the index, use ``np.argsort``.

    `runs` says the keys are a few sorted runs one after another (a merge). Each round's packed keys
    then ascend within each run's share of a group, and numpy's stable sort, a timsort that finds
    runs and merges them, is the faster one (16 runs of 100k uint64: 23 ms, against 109 ms for the
    SIMD quicksort, which is the faster on keys in no order: 85 against 101 ms). A reducer's merge of
    16 wordcount runs (1.6M keys) went from 230 to 90 ms, one of 17 runs of 'S10' keys (5.1M) from
    466 to 191 ms.
    """
    keys = check_keys(keys)
    n, width = len(keys), keys.dtype.itemsize
    if n < 2 or n < _SMALL_SORT or width == 0 or 64 - (n - 1).bit_length() < _MIN_DIGIT:
        return np.argsort(keys, kind="stable")
    words = _padded_to_8(keys)  # keys are read as whole 8-byte words
    # Each round leaves `records` (the records still to sort, in their current order) in whole groups:
    # a group's records share the key's bits [0, bit) and are in index order, and `group` numbers the
    # groups 0, 1, ... in key order. `todo` are the positions of `order` they fill (None: all of it).
    group = np.zeros(n, dtype=np.uint64)
    kind: Literal["quicksort", "stable"] = "stable" if runs else "quicksort"
    prefix, order, bit = _sort_round(words, None, group, 0, kind)
    records, todo = order, None
    while bit < 8 * width:  # past the key's last bit, tied records are equal keys: done
        mixed = _mixed_groups(keys, records, prefix)
        if mixed is None:
            break
        keep, group = mixed
        todo = keep if todo is None else np.take(todo, keep)
        records = np.take(records, keep)
        if _free_bits(group)[1] < _MIN_DIGIT:
            order[todo] = np.take(records, np.argsort(np.take(keys, records), kind="stable"))
            break
        prefix, local, bit = _sort_round(words, records, group, bit, kind)
        records = np.take(records, local)
        order[todo] = records
    return order


def _free_bits(group: npt.NDArray[np.uint64]) -> tuple[int, int]:
    """(index bits, key bits) of a `key_order` round: of the uint64 per record, the group number takes
    the top bits and the record's position the low bits, and the key gets the bits in between."""
    index_bits = max(1, (len(group) - 1).bit_length())
    return index_bits, 64 - int(group[-1]).bit_length() - index_bits


def _sort_round(
    words: Keys,
    records: npt.NDArray[np.intp] | None,
    group: npt.NDArray[np.uint64],
    bit: int,
    kind: Literal["quicksort", "stable"] = "quicksort",
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.intp], int]:
    """One `key_order` round: sort `records` (None: all, in index order) by (group, key bits from
    `bit` on, position) with one uint64 sort of the given `kind`.

    Returns the sorted (group, key bits) prefixes, the new order as positions into `records`, and
    the number of leading key bits now sorted on.
    """
    index_bits, key_bits = _free_bits(group)
    packed, bit, valid = _window(words, records, bit, key_bits)
    if valid == 0:
        return group, np.arange(len(group), dtype=np.intp), bit
    take = min(key_bits, valid)
    np.right_shift(packed, np.uint64(64 - take), out=packed)
    if int(group[-1]):
        np.bitwise_or(packed, group << np.uint64(take), out=packed)
    np.left_shift(packed, np.uint64(index_bits), out=packed)
    np.bitwise_or(packed, np.arange(len(group), dtype=np.intp).view(np.uint64), out=packed)
    packed.sort(kind=kind)
    local = (packed & np.uint64((1 << index_bits) - 1)).view(np.intp)
    return np.right_shift(packed, np.uint64(index_bits), out=packed), local, bit + take


def _window(
    words: Keys, records: npt.NDArray[np.intp] | None, bit: int, wanted: int
) -> tuple[npt.NDArray[np.uint64], int, int]:
    """Each record's key bits from the first bit at or after `bit` where the records disagree,
    left-aligned in a uint64: (windows, that bit, how many leading window bits are key bits).

    Why: bits that every record shares cannot order anything, and skipping them spares keys with a
    common prefix (URLs, paths, dates) rounds spent on it. Their span is read off the smallest and
    largest window, two cheap reductions. 0 key bits: the records agree to the end of the keys.
    """
    stride = words.dtype.itemsize
    while bit < 8 * stride:
        start = min(bit // 8, stride - 8)  # the last word overlaps bytes already agreed on
        column = np.ndarray((len(words),), dtype=">u8", buffer=words, offset=start, strides=(stride,))
        # Indexing, not np.take: take copies a strided array whole before gathering from it.
        window = (column if records is None else column[records]).astype(np.uint64)
        shift = bit - 8 * start
        np.left_shift(window, np.uint64(shift), out=window)
        agreed = 64 - int(window.min() ^ window.max()).bit_length()
        if agreed == 64:
            bit += 64 - shift
            continue
        bit += agreed
        valid = 64 - shift - agreed
        if valid >= wanted or min(bit // 8, stride - 8) == start:  # re-reading would not gain bits
            np.left_shift(window, np.uint64(agreed), out=window)
            return window, bit, valid
    return np.zeros(0, dtype=np.uint64), bit, 0


def _mixed_groups(
    keys: Keys, records: npt.NDArray[np.intp], prefix: npt.NDArray[np.uint64]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.uint64]] | None:
    """The groups of equal `prefix` (sorted) that hold more than one distinct key, or None if none do.

    Returns their positions in `records` and their group numbers 0, 1, ... Only records with a tied
    neighbour are compared as strings: a group whose tied neighbours are all equal keys is final.
    """
    same = prefix[1:] == prefix[:-1]
    paired = np.zeros(len(prefix), dtype=bool)
    paired[:-1] = same
    paired[1:] |= same
    pos = np.flatnonzero(paired)
    tied = np.take(keys, np.take(records, pos))
    split = np.flatnonzero(_next_differs(tied) & np.take(same, pos[:-1]))
    if len(split) == 0:
        return None
    starts = np.ones(len(pos), dtype=bool)
    np.logical_not(np.take(same, pos[1:] - 1), out=starts[1:])
    group_id = np.cumsum(starts) - 1
    mixed = np.zeros(int(group_id[-1]) + 1, dtype=bool)
    mixed[np.take(group_id, split)] = True
    going_on = np.take(mixed, group_id)
    kept = group_id[going_on]
    group = np.zeros(len(kept), dtype=np.uint64)
    np.cumsum(kept[1:] != kept[:-1], out=group[1:])
    return pos[going_on], group


def split_sorted(
    keys: Keys, values: Values, reducers: int, parts: Int64s | None = None
) -> list[tuple[Keys, Values]]:
    """One (keys, values) pair per partition, each sorted by key; equal keys keep their input order.

    `parts` overrides the hash partitioner (give `range_partition_of(...)` for range partitioning).
    Why partition first, then sort each partition: the partition sort is a linear radix sort, and R
    sorts of n/R keys (`key_order`) are cheaper than one lexsort over (partition, key) of all n.
    The returned arrays are views of one reordered copy.
    """
    keys = check_keys(keys)
    _check_reducers(reducers)
    if len(values) != len(keys):
        raise ValueError(f"{len(keys)} keys but {len(values)} values")
    if parts is None:
        parts = partition_of(keys, reducers)
    elif len(parts) != len(keys) or (len(parts) and (parts.min() < 0 or parts.max() >= reducers)):
        raise ValueError(f"parts must give each key a partition in [0, {reducers})")
    order = _stable_sort_order(parts, reducers)
    bounds = np.zeros(reducers + 1, dtype=np.int64)
    np.cumsum(np.bincount(parts, minlength=reducers), out=bounds[1:])
    sorted_keys = np.take(keys, order)
    for p in range(reducers):
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        if hi - lo > 1:
            within = key_order(sorted_keys[lo:hi])
            sorted_keys[lo:hi] = np.take(sorted_keys[lo:hi], within)
            order[lo:hi] = np.take(order[lo:hi], within)
    sorted_values = np.take(values, order, axis=0)
    return [
        (sorted_keys[bounds[p] : bounds[p + 1]], sorted_values[bounds[p] : bounds[p + 1]])
        for p in range(reducers)
    ]


def group_runs(sorted_keys: Keys) -> tuple[Keys, Int64s, Int64s]:
    """(distinct keys, start index of each run, length of each run) of sorted keys."""
    sorted_keys = check_keys(sorted_keys)
    n = len(sorted_keys)
    if n == 0:
        return sorted_keys[:0], np.zeros(0, np.int64), np.zeros(0, np.int64)
    is_start = np.empty(n, dtype=bool)
    is_start[0] = True
    is_start[1:] = _next_differs(sorted_keys)
    starts = np.flatnonzero(is_start).astype(np.int64)
    counts = np.diff(starts, append=np.int64(n))
    return np.take(sorted_keys, starts), starts, counts


def combine(sorted_keys: Keys, values: Values, op: str) -> tuple[Keys, Values]:
    """Reduce the values of each run of equal keys: (distinct keys, one value per key).

    * ``sum``: int64 / uint64 / float64 / complex128 sums (bools count as 0/1);
    * ``count``: int64 number of records per key (values are not looked at);
    * ``min`` / ``max``: per-key extremes in the values' dtype (NaN propagates, as in np.minimum);
    * ``mean``: float64 sum / count. It is the *final* step of a group-by only: means of partial means are
      wrong, so it is not a combiner (use sum and count on the map side and divide at the end).

    sum, count, min and max are associative, so they also run on the map side; partial results are then
    combined again with ``MERGE_OP[op]`` (partial counts are summed, not counted).
    """
    if op not in OPS:
        raise ValueError(f"unknown combiner {op!r}: expected one of {', '.join(OPS)}")
    if len(values) != len(sorted_keys):
        raise ValueError(f"{len(sorted_keys)} keys but {len(values)} values")
    unique, starts, counts = group_runs(sorted_keys)
    return unique, _reduce_runs(values, starts, counts, op)


def _reduce_runs(values: Values, starts: Int64s, counts: Int64s, op: str) -> Values:
    """One value per run of `values` (runs given by starts and counts), as `combine` documents."""
    if op == "count":
        return counts
    if values.dtype.kind not in "biufc":
        raise TypeError(f"combiner {op!r} needs numeric values, got dtype {values.dtype}")
    if op in ("min", "max"):
        if len(starts) == 0:
            return values[:0]
        return (np.minimum if op == "min" else np.maximum).reduceat(values, starts)
    acc = np.dtype(_SUM_DTYPES[values.dtype.kind])
    if len(starts) == 0:
        return np.zeros(0, dtype=np.float64 if op == "mean" else acc)
    sums = np.add.reduceat(values, starts, dtype=acc)
    return sums / counts if op == "mean" else sums


def _mix_hash(keys: Keys) -> npt.NDArray[np.uint64]:
    """A fast grouping hash (not FNV, not stable across versions): multiply-xor over 8-byte words.

    Only `aggregate` uses it, and its result never depends on it (ties are checked on the keys), so it
    can read each key as a few unaligned 8-byte words, the last one overlapping, instead of byte by byte.
    """
    n = len(keys)
    h = np.zeros(n, dtype=np.uint64)
    shifted = np.empty(n, dtype=np.uint64)
    for word in _words(_padded_to_8(keys)):
        np.bitwise_xor(h, word, out=h)
        np.multiply(h, np.uint64(0x9E3779B97F4A7C15), out=h)
        np.right_shift(h, np.uint64(32), out=shifted)
        np.bitwise_xor(h, shifted, out=h)
    np.multiply(h, np.uint64(0xBF58476D1CE4E5B9), out=h)
    return h


def aggregate(keys: Keys, values: Values, op: str) -> tuple[Keys, Values]:
    """`combine` for keys in any order: (distinct keys, sorted; one reduced value per key).

    Equal to sorting stably by key and then `combine` (values of a key are reduced in input order),
    but it never sorts all records as strings. It sorts one uint64 per record holding the high bits of
    a hash and, in the low bits, the record's index: numpy sorts plain uint64 with SIMD quicksort, many
    times faster than an argsort, the index bits give the permutation back and make the order stable.
    Two keys whose hashes tie are separated by a string sort of just their groups, so the result is
    exact whatever the hash does; only the distinct keys are sorted by key (`key_order`) at the end.
    Memory is about 3x the keys plus 2x the values.
    """
    if op not in OPS:
        raise ValueError(f"unknown combiner {op!r}: expected one of {', '.join(OPS)}")
    keys = check_keys(keys)
    n = len(keys)
    if len(values) != n:
        raise ValueError(f"{n} keys but {len(values)} values")
    if n == 0 or keys.dtype.itemsize == 0:
        return combine(keys, values, op)
    index_bits = max(1, (n - 1).bit_length())
    low = np.uint64((1 << index_bits) - 1)
    packed = _mix_hash(keys)
    np.bitwise_and(packed, ~low, out=packed)
    np.bitwise_or(packed, np.arange(n, dtype=np.uint64), out=packed)
    packed.sort()
    order = (packed & low).astype(np.intp)
    groups = packed >> np.uint64(index_bits)
    ordered_keys = np.take(keys, order)
    key_change = _next_differs(ordered_keys)
    tied = key_change & (groups[1:] == groups[:-1])  # different keys, same hash bits
    if tied.any():
        group_id = np.zeros(n, dtype=np.int64)
        np.cumsum(groups[1:] != groups[:-1], out=group_id[1:])
        bad = np.zeros(int(group_id[-1]) + 1, dtype=bool)
        bad[group_id[1:][tied]] = True
        redo = np.flatnonzero(bad[group_id])
        redone = np.take(redo, np.lexsort((np.take(ordered_keys, redo), np.take(group_id, redo))))
        order[redo] = np.take(order, redone)
        ordered_keys[redo] = np.take(ordered_keys, redone)
        key_change = _next_differs(ordered_keys)
    is_start = np.ones(n, dtype=bool)
    is_start[1:] = key_change
    starts = np.flatnonzero(is_start).astype(np.int64)
    counts = np.diff(starts, append=np.int64(n))
    reduced = _reduce_runs(values if op == "count" else np.take(values, order, axis=0), starts, counts, op)
    distinct = np.take(ordered_keys, starts)
    by_key = key_order(distinct)
    return np.take(distinct, by_key), np.take(reduced, by_key, axis=0)
