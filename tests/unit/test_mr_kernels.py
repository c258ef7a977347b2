"""The MapReduce kernels against plain-Python references: same answers, bit for bit, on any input."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.mapreduce import kernels
from swarm.mapreduce.app import format_lines
from swarm.mapreduce.kernels import (
    aggregate,
    combine,
    group_runs,
    hash_keys,
    key_order,
    partition_of,
    range_partition_of,
    sample_boundaries,
    split_sorted,
)
from swarm.mapreduce.merge import MergedRuns, combine_runs, merge_sorted

FAST = settings(max_examples=60, deadline=None)


def fnv1a(data: bytes) -> int:
    """64-bit FNV-1a, straight from its definition."""
    h = 14695981039346656037
    for byte in data:
        h = ((h ^ byte) * 1099511628211) % 2**64
    return h


def as_keys(items: list[bytes]) -> np.ndarray[Any, Any]:
    return np.array(items, dtype=np.bytes_)


# Keys as numpy stores them: UTF-8 of any text (non-ASCII included) that does not end in NUL. A small
# alphabet makes equal keys and shared prefixes common, which is where sorting and grouping go wrong.
_any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)
_few_letters = st.text("ab\x00é", max_size=3)
key_bytes = st.one_of(_any_text, _few_letters).map(str.encode).filter(lambda b: not b.endswith(b"\0"))
key_lists = st.lists(key_bytes, max_size=40)


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"", 0xCBF29CE484222325), (b"a", 0xAF63DC4C8601EC8C), (b"foobar", 0x85944171F73967E8)],
)
def test_hash_matches_published_fnv1a_vectors(data: bytes, expected: int) -> None:
    assert fnv1a(data) == expected
    assert int(hash_keys(as_keys([data]))[0]) == expected


@FAST
@given(key_lists, st.integers(0, 12))
def test_hash_equals_reference_whatever_the_padding(items: list[bytes], extra_width: int) -> None:
    width = max([len(k) for k in items] + [1]) + extra_width
    keys = np.array(items, dtype=f"S{width}")
    assert hash_keys(keys).tolist() == [fnv1a(k) for k in items]


def test_hash_across_blocks_and_lengths() -> None:
    rng = np.random.default_rng(7)
    items = [bytes(rng.integers(1, 256, rng.integers(0, 30))) for _ in range(kernels._CHUNK + 1000)]
    items = [k.rstrip(b"\0") for k in items]
    hashes = hash_keys(as_keys(items)).tolist()
    edge = range(kernels._CHUNK - 50, kernels._CHUNK + 50)
    for i in [*range(0, len(items), 17), *edge]:
        assert hashes[i] == fnv1a(items[i])


def test_hash_rejects_unicode_keys() -> None:
    with pytest.raises(TypeError):
        hash_keys(np.array(["a"]))


@FAST
@given(key_lists, st.integers(1, 9))
def test_partition_of_is_hash_mod_reducers(items: list[bytes], reducers: int) -> None:
    parts = partition_of(as_keys(items), reducers)
    assert parts.dtype == np.int64
    assert parts.tolist() == [fnv1a(k) % reducers for k in items]


def order_reference(items: list[bytes]) -> list[int]:
    """Stable sort by key: Python compares bytes as numpy compares NUL-padded keys that do not end in NUL."""
    return sorted(range(len(items)), key=lambda i: items[i])  # sorted() is stable


def packed_path(patch: pytest.MonkeyPatch, fallback: bool = False) -> None:
    """Make `key_order` take its uint64 path on inputs of any size (it leaves small ones to argsort).

    With `fallback`, every round after the first (of one `key_order` call) is told it has no key bits,
    so the records still tied after the first round go to the string sort fallback.
    """
    patch.setattr(kernels, "_SMALL_SORT", 2)
    if fallback:
        real, calls = kernels._free_bits, itertools.count()

        def first_round_only(group: np.ndarray[Any, Any]) -> tuple[int, int]:
            index_bits, key_bits = real(group)
            return index_bits, key_bits if next(calls) == 0 else 0

        patch.setattr(kernels, "_free_bits", first_round_only)


def spread(data: st.DataObject, prefixes: list[bytes], tails: list[bytes]) -> list[bytes]:
    """Keys drawn as prefix + tail, duplicates likely."""
    return data.draw(st.lists(st.sampled_from([p + t for p in prefixes for t in tails]), max_size=60))


# Prefixes of 9+ bytes outlast the first round's bits, so keys with one prefix and different tails tie
# and need refining; different first bytes keep the prefixes from being skipped as shared by all keys.
_prefixes = st.lists(st.binary(min_size=9, max_size=30), min_size=2, max_size=4, unique_by=lambda b: b[:1])
_tails = st.lists(st.binary(max_size=6).map(lambda b: b + b"\1"), min_size=1, max_size=6)  # no NUL at the end


@FAST
@given(key_lists, st.integers(0, 12), st.booleans(), st.booleans())
def test_key_order_is_a_stable_sort(items: list[bytes], extra_width: int, fallback: bool, runs: bool) -> None:
    """`runs` only picks the sort that is faster on sorted runs: keys in any order still come out right."""
    width = max([len(k) for k in items] + [1]) + extra_width
    keys = np.array(items, dtype=f"S{width}")
    assert key_order(keys, runs=runs).tolist() == order_reference(items)  # small: np.argsort
    with pytest.MonkeyPatch.context() as patch:
        packed_path(patch, fallback)
        order = key_order(keys, runs=runs)
    assert order.dtype == np.intp
    assert order.tolist() == order_reference(items)


@FAST
@given(st.data(), _prefixes, _tails, st.integers(1, 5), st.booleans())
def test_key_order_of_sorted_runs_keeps_run_order_among_equal_keys(
    data: st.DataObject, prefixes: list[bytes], tails: list[bytes], count: int, fallback: bool
) -> None:
    """A merge: the runs each sorted, equal keys in several runs (and within one)."""
    items = [k for _ in range(count) for k in sorted(spread(data, prefixes, tails))]
    with pytest.MonkeyPatch.context() as patch:
        packed_path(patch, fallback)
        assert key_order(as_keys(items), runs=True).tolist() == order_reference(items)


@FAST
@given(st.data(), _prefixes, _tails, st.booleans())
def test_key_order_of_long_shared_prefixes_and_duplicates(
    data: st.DataObject, prefixes: list[bytes], tails: list[bytes], fallback: bool
) -> None:
    items = spread(data, prefixes, tails)
    with pytest.MonkeyPatch.context() as patch:
        packed_path(patch, fallback)
        assert key_order(as_keys(items)).tolist() == order_reference(items)


@FAST
@given(st.integers(1, 40), st.data())
def test_key_order_at_every_width(width: int, data: st.DataObject) -> None:
    # bytes 0 (interior NULs), 1, 0x7f, 0x80 and 0xff: signedness and padding both show
    key = st.lists(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]), max_size=width).map(bytes)
    items = data.draw(st.lists(key.filter(lambda b: not b.endswith(b"\0")), max_size=50))
    keys = np.array(items, dtype=f"S{width}")
    with pytest.MonkeyPatch.context() as patch:
        packed_path(patch)
        assert key_order(keys).tolist() == order_reference(items)


def test_key_order_of_empty_and_single_keys() -> None:
    with pytest.MonkeyPatch.context() as patch:
        packed_path(patch)
        for items in ([], [b"k"], [b"k", b"k"], [b"b", b"a"]):
            assert key_order(as_keys(items)).tolist() == order_reference(items)
    with pytest.raises(TypeError):
        key_order(np.array(["a"]))


def test_key_order_refines_keys_that_tie_in_their_first_words() -> None:
    # Thousands of keys in 7 groups that tie in their first 8+ bytes, differ after them, and some are
    # equal (plus a few short keys). The groups differ inside their long shared parts, so those cannot
    # be skipped as common to all keys: only refinement rounds order them. Default thresholds: the path
    # big inputs take.
    rng = np.random.default_rng(11)
    tags = rng.integers(0, 7 * 900, 6000).tolist()
    items = [b"!", b"~~", b"prefix", *(b"%d-prefix-%d-shared-part/%d" % (t % 7, t % 7, t // 7) for t in tags)]
    items = [items[i] for i in rng.permutation(len(items))]
    rounds = 0
    real_round = kernels._sort_round

    def counted(*args: Any) -> Any:
        nonlocal rounds
        rounds += 1
        return real_round(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels, "_sort_round", counted)
        order = key_order(as_keys(items))
    assert rounds >= 3
    assert order.tolist() == order_reference(items)
    assert order.tolist() == np.argsort(as_keys(items), kind="stable").tolist()


def _split_reference(items: list[bytes], parts: list[int], reducers: int) -> list[list[tuple[bytes, int]]]:
    out: list[list[tuple[bytes, int]]] = [[] for _ in range(reducers)]
    for i, (key, part) in enumerate(zip(items, parts, strict=True)):
        out[part].append((key, i))
    return [sorted(rows, key=lambda row: row[0]) for rows in out]  # sorted() is stable


@FAST
@given(key_lists, st.integers(1, 6))
def test_split_sorted_is_a_stable_sort_per_partition(items: list[bytes], reducers: int) -> None:
    keys = as_keys(items)
    runs = split_sorted(keys, np.arange(len(items)), reducers)
    expected = _split_reference(items, [fnv1a(k) % reducers for k in items], reducers)
    assert [list(zip(k.tolist(), v.tolist(), strict=True)) for k, v in runs] == expected


@FAST
@given(key_lists, st.data())
def test_split_sorted_with_given_partitions(items: list[bytes], data: st.DataObject) -> None:
    parts = data.draw(st.lists(st.integers(0, 2), min_size=len(items), max_size=len(items)))
    values = np.array([str(i) for i in range(len(items))], dtype="U")
    runs = split_sorted(as_keys(items), values, 3, np.array(parts, dtype=np.int64))
    expected = _split_reference(items, parts, 3)
    got = [[(k, int(v)) for k, v in zip(ks.tolist(), vs.tolist(), strict=True)] for ks, vs in runs]
    assert got == expected


def test_split_sorted_checks_its_inputs() -> None:
    with pytest.raises(ValueError):
        split_sorted(as_keys([b"a"]), np.arange(2), 2)
    with pytest.raises(ValueError):
        split_sorted(as_keys([b"a"]), np.arange(1), 2, np.array([2]))
    with pytest.raises(ValueError):
        split_sorted(as_keys([b"a"]), np.arange(1), 0)


def test_split_sorted_with_many_reducers_uses_wide_partition_numbers() -> None:
    items = [str(i).encode() for i in range(3000)]
    runs = split_sorted(as_keys(items), np.arange(3000), 70_000)
    assert len(runs) == 70_000
    assert sorted(k for ks, _ in runs for k in ks.tolist()) == sorted(items)


@FAST
@given(key_lists)
def test_group_runs_matches_groupby(items: list[bytes]) -> None:
    items.sort()
    unique, starts, counts = group_runs(as_keys(items))
    expected = [(key, len(list(group))) for key, group in itertools.groupby(items)]
    assert list(zip(unique.tolist(), counts.tolist(), strict=True)) == expected
    assert starts.tolist() == [0, *itertools.accumulate(c for _, c in expected)][: len(expected)]


def test_group_runs_of_all_equal_and_empty() -> None:
    unique, starts, counts = group_runs(as_keys([b"k"] * 5))
    assert (unique.tolist(), starts.tolist(), counts.tolist()) == ([b"k"], [0], [5])
    unique, starts, counts = group_runs(as_keys([]))
    assert (len(unique), len(starts), len(counts)) == (0, 0, 0)


def _combine_reference(items: list[bytes], values: list[Any], op: str) -> list[tuple[bytes, Any]]:
    folds: dict[str, Callable[[list[Any]], Any]] = {
        "sum": sum,
        "count": len,
        "min": min,
        "max": max,
        "mean": lambda vs: sum(vs) / len(vs),
    }
    fold = folds[op]
    out = []
    for key, group in itertools.groupby(zip(items, values, strict=True), key=lambda kv: kv[0]):
        out.append((key, fold([v for _, v in group])))
    return out


pairs = st.lists(st.tuples(key_bytes, st.integers(-(2**40), 2**40)), max_size=40)


@FAST
@given(pairs, st.sampled_from(["sum", "count", "min", "max", "mean"]))
def test_combine_matches_reference(rows: list[tuple[bytes, int]], op: str) -> None:
    rows.sort(key=lambda kv: kv[0])
    items, values = [k for k, _ in rows], [v for _, v in rows]
    unique, reduced = combine(as_keys(items), np.array(values, dtype=np.int64), op)
    expected = _combine_reference(items, values, op)
    assert unique.tolist() == [k for k, _ in expected]
    if op == "mean":
        assert reduced.dtype == np.float64
        assert reduced.tolist() == pytest.approx([v for _, v in expected])
    else:
        assert reduced.dtype == np.int64
        assert reduced.tolist() == [v for _, v in expected]


@FAST
@given(pairs, st.sampled_from(["sum", "count", "min", "max", "mean"]))
def test_aggregate_of_unsorted_keys_equals_combine_after_sorting(
    rows: list[tuple[bytes, int]], op: str
) -> None:
    keys, values = as_keys([k for k, _ in rows]), np.array([v for _, v in rows], dtype=np.int64)
    rows.sort(key=lambda kv: kv[0])
    expected = _combine_reference([k for k, _ in rows], [v for _, v in rows], op)
    unique, reduced = aggregate(keys, values, op)
    assert unique.tolist() == [k for k, _ in expected]
    assert reduced.tolist() == pytest.approx([v for _, v in expected])
    with pytest.MonkeyPatch.context() as patch:  # the distinct keys sorted by key_order's uint64 path
        packed_path(patch)
        packed_unique, packed_reduced = aggregate(keys, values, op)
    assert (packed_unique.tolist(), packed_reduced.tolist()) == (unique.tolist(), reduced.tolist())


@FAST
@given(pairs, st.sampled_from(["zeros", "length"]))
def test_aggregate_is_exact_when_hashes_tie(rows: list[tuple[bytes, int]], fake_hash: str) -> None:
    def tied(keys: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        lengths = np.strings.str_len(keys).astype(np.uint64) << np.uint64(60)
        return lengths if fake_hash == "length" else np.zeros(len(keys), dtype=np.uint64)

    keys, values = as_keys([k for k, _ in rows]), np.array([v for _, v in rows], dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    expected_keys, expected = combine(keys[order], values[order], "sum")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels, "_mix_hash", tied)
        unique, reduced = aggregate(keys, values, "sum")
    assert (unique.tolist(), reduced.tolist()) == (expected_keys.tolist(), expected.tolist())


def test_aggregate_keeps_rows_whole() -> None:
    keys = as_keys([b"b", b"a", b"b"])
    unique, sums = aggregate(keys, np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int32), "sum")
    assert (unique.tolist(), sums.dtype, sums.tolist()) == ([b"a", b"b"], np.int64, [[3, 4], [6, 8]])


def test_aggregate_keeps_input_order_within_a_key() -> None:
    # float sums depend on order: aggregate adds in input order, like a stable sort then combine
    keys = as_keys([b"k", b"j", b"k", b"k"] * 50)
    values = np.array([1e16, 1.0, -1e16, 1.0] * 50)
    order = np.argsort(keys, kind="stable")
    assert (
        aggregate(keys, values, "sum")[1].tolist() == combine(keys[order], values[order], "sum")[1].tolist()
    )


@pytest.mark.parametrize("op", ["sum", "count", "min", "max", "mean"])
def test_combine_small_and_float_values(op: str) -> None:
    keys = as_keys([b"a", b"a", b"b"])
    unique, reduced = combine(keys, np.array([100, 100, 7], dtype=np.int8), op)
    assert unique.tolist() == [b"a", b"b"]
    expected = {"sum": [200, 7], "count": [2, 1], "min": [100, 7], "max": [100, 7], "mean": [100.0, 7.0]}
    assert reduced.tolist() == expected[op]  # sums widen: no int8 overflow
    _, floats = combine(keys, np.array([0.5, 0.25, 2.0], dtype=np.float32), op)
    assert floats.tolist() == pytest.approx(
        {"sum": [0.75, 2], "count": [2, 1], "min": [0.25, 2], "max": [0.5, 2], "mean": [0.375, 2]}[op]
    )
    empty_keys, empty = combine(as_keys([]), np.zeros(0, dtype=np.int32), op)
    assert len(empty_keys) == len(empty) == 0


def test_combine_rejects_unknown_ops_and_strings() -> None:
    with pytest.raises(ValueError):
        combine(as_keys([b"a"]), np.array([1]), "median")
    with pytest.raises(TypeError):
        combine(as_keys([b"a"]), np.array([b"x"]), "sum")
    assert combine(as_keys([b"a"]), np.array([b"x"]), "count")[1].tolist() == [1]


@FAST
@given(st.lists(st.lists(key_bytes, max_size=15), min_size=1, max_size=6))
def test_merge_sorted_is_stable_across_runs(runs_items: list[list[bytes]]) -> None:
    runs = []
    tagged: list[tuple[bytes, str]] = []
    for r, items in enumerate(runs_items):
        items.sort()
        tags = [f"{r}.{i}" for i in range(len(items))]
        runs.append((as_keys(items), np.array(tags, dtype="U")))
        tagged += zip(items, tags, strict=True)
    keys, values = merge_sorted(runs)
    expected = sorted(tagged, key=lambda kv: kv[0])
    assert list(zip(keys.tolist(), values.tolist(), strict=True)) == expected


@FAST
@given(key_lists, st.integers(1, 3))
def test_split_and_merge_move_whole_rows(items: list[bytes], reducers: int) -> None:
    # (n, 3) uint8 rows, as TeraSort's (n, 100) values: every row travels with its key, shape and dtype kept
    rows = np.arange(3 * len(items), dtype=np.uint8).reshape(len(items), 3)
    with pytest.MonkeyPatch.context() as patch:
        packed_path(patch)
        runs = split_sorted(as_keys(items), rows, reducers)
        keys, values = merge_sorted(runs)
    expected = order_reference(items)
    assert keys.tolist() == [items[i] for i in expected]
    assert values.dtype == np.uint8
    assert values.shape == (len(items), 3)
    assert values.tolist() == rows[expected].tolist()


@FAST
@given(st.lists(st.lists(key_bytes, max_size=15), min_size=1, max_size=6), st.integers(1, 8))
def test_merge_chunks_are_the_merge_cut_at_key_boundaries(runs_items: list[list[bytes]], rows: int) -> None:
    runs = []
    for r, items in enumerate(runs_items):
        items.sort()
        tags = np.array([[r, i] for i in range(len(items))], dtype=np.int32).reshape(len(items), 2)
        runs.append((as_keys(items), tags))
    whole_keys, whole_values = merge_sorted(runs)
    keys_seen: list[bytes] = []
    values_seen: list[list[int]] = []
    last_key: bytes | None = None
    for keys, values in MergedRuns(runs).chunks(rows):
        assert len(keys) == len(values) >= 1
        assert keys[0] != last_key  # a key never continues into the next chunk
        assert len(keys) <= rows or (keys[rows - 1 :] == keys[-1]).all()  # grown only to finish a key
        keys_seen += keys.tolist()
        values_seen += values.tolist()  # copied out now: the next chunk overwrites the buffer
        last_key = keys[-1]
    assert keys_seen == whole_keys.tolist()
    assert values_seen == whole_values.tolist()


def test_merge_values_of_a_slice_and_bad_chunk_sizes() -> None:
    runs = [(as_keys([b"a", b"c", b"e"]), np.array([1, 3, 5])), (as_keys([b"b", b"d"]), np.array([2, 4]))]
    merged = MergedRuns(runs)
    assert merged.values(1, 4).tolist() == [2, 3, 4]
    assert merged.all_values().tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        next(merged.chunks(0))
    with pytest.raises(ValueError):
        MergedRuns([(as_keys([b"a"]), np.zeros((1, 2))), (as_keys([b"b"]), np.zeros((1, 3)))])


def test_merge_sorted_of_runs_already_in_order_and_of_none() -> None:
    runs = [(as_keys([b"a", b"b"]), np.array([1, 2])), (as_keys([b"b", b"c"]), np.array([3, 4]))]
    keys, values = merge_sorted(runs)
    assert (keys.tolist(), values.tolist()) == ([b"a", b"b", b"b", b"c"], [1, 2, 3, 4])
    with pytest.raises(ValueError):
        merge_sorted([])


@FAST
@given(key_lists, st.lists(key_bytes, max_size=6))
def test_range_partition_matches_bisect(items: list[bytes], boundaries: list[bytes]) -> None:
    boundaries.sort()
    parts = range_partition_of(as_keys(items), as_keys(boundaries))
    assert parts.dtype == np.int64
    assert parts.tolist() == [bisect.bisect_right(boundaries, k) for k in items]


@FAST
@given(key_lists, st.integers(1, 8))
def test_sample_boundaries_are_sorted_sample_quantiles(sample: list[bytes], reducers: int) -> None:
    bounds = sample_boundaries(as_keys(sample), reducers).tolist()
    if not sample:
        assert bounds == []
        return
    ordered = sorted(sample)
    assert bounds == [ordered[i * len(ordered) // reducers] for i in range(1, reducers)]
    # Range partitions then hold consecutive key ranges.
    parts = range_partition_of(as_keys(ordered), as_keys(bounds)).tolist()
    assert parts == sorted(parts)


@FAST
@given(
    st.lists(
        st.lists(st.tuples(key_bytes, st.floats(-1e6, 1e6, width=32)), max_size=15), min_size=1, max_size=6
    ),
    st.sampled_from(["sum", "count", "min", "max"]),
)
def test_combine_runs_equals_combining_the_merge(runs_rows: list[list[tuple[bytes, float]]], op: str) -> None:
    runs = []
    for rows in runs_rows:
        rows.sort(key=lambda kv: kv[0])
        runs.append((as_keys([k for k, _ in rows]), np.array([v for _, v in rows], dtype=np.float64)))
    keys, values = combine_runs(runs, op)
    expected_keys, expected_values = combine(*merge_sorted(runs), op)
    assert keys.tolist() == expected_keys.tolist()
    assert values.dtype == expected_values.dtype
    assert values.tobytes() == expected_values.tobytes()  # float sums in the same order: the same bits


def test_combine_runs_takes_its_types_from_the_runs_that_hold_records() -> None:
    empty = (np.zeros(0, dtype="S1"), np.zeros(0))  # what an empty partition's run decodes to
    runs = [empty, (as_keys([b"a", b"b"]), np.array([1, 2])), empty, (as_keys([b"b"]), np.array([5]))]
    keys, values = combine_runs(runs, "sum")
    assert (keys.tolist(), values.tolist(), values.dtype) == ([b"a", b"b"], [1, 7], np.dtype(np.int64))
    assert combine_runs([empty], "sum")[0].tolist() == []
    with pytest.raises(ValueError):
        combine_runs([], "sum")


def _lines_one_by_one(keys: np.ndarray[Any, Any], values: np.ndarray[Any, Any]) -> bytes:
    return b"".join(
        k + b" " + str(int(v)).encode() + b"\n" for k, v in zip(keys.tolist(), values, strict=True)
    )


@pytest.mark.parametrize("dtype", ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", ">i8"])
def test_integer_lines_are_the_decimal_of_every_value(dtype: str) -> None:
    info = np.iinfo(np.dtype(dtype))
    rng = np.random.default_rng(7)
    edges = [info.min, info.min + 1, -1, 0, 1, 9, 10, 99, 100, info.max - 1, info.max]
    numbers = [v for v in edges if info.min <= v <= info.max]
    numbers += rng.integers(
        info.min, info.max, 200, dtype=np.dtype(dtype).newbyteorder("="), endpoint=True
    ).tolist()
    values = np.array(numbers, dtype=dtype)
    raw = rng.integers(0, 256, (len(values), 5), dtype=np.uint8)
    raw[:, 2] = 0  # a NUL inside a key is one of its bytes; only trailing NULs are padding
    raw[::3, 3:] = 0
    keys = raw.view("S5").reshape(-1)
    assert format_lines(keys, values) == _lines_one_by_one(keys, values)
    assert format_lines(keys[::2], values[::2]) == _lines_one_by_one(keys[::2], values[::2])  # strided views


def test_integer_lines_past_one_block() -> None:
    n = 3 * (1 << 15) + 5  # the lines are built a block at a time
    keys = np.char.encode(np.char.mod("w%d", np.arange(n)), "ascii")
    values = np.arange(n, dtype=np.int64) * 1_000_003 - 7
    assert format_lines(keys, values) == _lines_one_by_one(keys, values)
