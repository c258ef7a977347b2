"""Run files come back exactly as written or not at all; spilling never changes the final runs."""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.mapreduce.kernels import MERGE_OP, combine, range_partition_of, split_sorted
from swarm.mapreduce.runs import CorruptRun, RunInfo, Spiller, file_checksum, read_run, write_run

Array = np.ndarray[Any, Any]

SAMPLES: list[tuple[str, Array, Array]] = [
    ("ints", np.array([b"a", b"b\xc3\xa9", b"c"]), np.array([1, -2, 3], dtype=np.int64)),
    ("float32", np.array([b"x", b"x"]), np.array([0.5, np.nan], dtype=np.float32)),
    ("bytes", np.array([b"k1", b"k2"]), np.array([b"one", b"three"])),
    ("unicode", np.array([b"k"]), np.array(["naïve ✓"])),
    ("rows", np.array([b"a", b"b"]), np.arange(6, dtype=">i4").reshape(2, 3)),
    ("empty", np.zeros(0, dtype="S3"), np.zeros(0, dtype=np.float64)),
]


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(("name", "keys", "values"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_round_trip(tmp_path: Path, name: str, keys: Array, values: Array, compress: bool) -> None:
    info = write_run(tmp_path / f"{name}.run", keys, values, compress)
    data = info.path.read_bytes()
    assert info == RunInfo(tmp_path / f"{name}.run", len(keys), len(data), file_checksum(data))
    sources: list[tuple[Path | bytes, str | None]] = [
        (info.path, info.checksum),
        (info.path, None),
        (data, info.checksum),
        (data, None),
    ]
    for source, checksum in sources:
        got_keys, got_values = read_run(source, checksum)
        assert got_keys.dtype == keys.dtype and got_values.dtype == values.dtype
        assert got_values.shape == values.shape
        np.testing.assert_array_equal(got_keys, keys)
        np.testing.assert_array_equal(got_values, values)
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.run"]  # no temp file left behind


def test_compression_shrinks_repetitive_runs(tmp_path: Path) -> None:
    keys, values = np.array([b"same-key"] * 1000), np.zeros(1000, dtype=np.int64)
    plain = write_run(tmp_path / "plain.run", keys, values)
    packed = write_run(tmp_path / "packed.run", keys, values, compress=True)
    assert packed.nbytes < plain.nbytes / 10


def test_writing_unstorable_values_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_run(tmp_path / "bad.run", np.array([b"a"]), np.array([object()]))
    with pytest.raises(ValueError):
        write_run(tmp_path / "bad.run", np.array([b"a"]), np.array([1, 2]))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def small_run() -> tuple[bytes, str]:
    with tempfile.TemporaryDirectory() as directory:
        info = write_run(Path(directory) / "r.run", np.array([b"ab", b"cd"]), np.array([1, 2]), True)
        return info.path.read_bytes(), info.checksum


@pytest.mark.parametrize("with_checksum", [True, False])
def test_every_flipped_byte_is_caught(small_run: tuple[bytes, str], with_checksum: bool) -> None:
    data, checksum = small_run
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x40
        with pytest.raises(CorruptRun):
            read_run(bytes(damaged), checksum if with_checksum else None)


@pytest.mark.parametrize("check", ["checksum", "trailer", "verified"])
def test_every_truncation_and_extension_is_caught(small_run: tuple[bytes, str], check: str) -> None:
    """Even bytes a fetch has verified (so the trailer is not recomputed) must have the header's size."""
    data, checksum = small_run
    for damaged in [data[:n] for n in range(len(data))] + [data + b"\0", data + data]:
        with pytest.raises(CorruptRun):
            read_run(damaged, checksum if check == "checksum" else None, verified=check == "verified")


def test_bad_magic_and_other_files(tmp_path: Path, small_run: tuple[bytes, str]) -> None:
    data, _ = small_run
    with pytest.raises(CorruptRun, match="magic"):
        read_run(_recrc(b"X" + data[1:]))
    other = tmp_path / "other.run"
    other.write_bytes(data)
    with pytest.raises(CorruptRun, match="checksum"):
        read_run(other, "0" * 8)
    assert issubclass(CorruptRun, ValueError)


def _recrc(data: bytes) -> bytes:
    """Rewrite the crc32 trailer, to reach the checks behind it."""
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-8]))


def test_damaged_header_with_a_valid_trailer_is_caught(small_run: tuple[bytes, str]) -> None:
    data, _ = small_run
    start = data.index(b'{"count"')
    for old, new in [
        (b'"count":2', b'"count":3'),
        (b'"key_dtype":"|S2"', b'"key_dtype":"|O8"'),
        (b"{", b"["),
    ]:
        at = data.index(old, start)
        with pytest.raises(CorruptRun):
            read_run(_recrc(data[:at] + new + data[at + len(old) :]))


# ---- spilling ----------------------------------------------------------------------------------------

keys_st = st.text("abé", max_size=2).map(str.encode)
batches_st = st.lists(st.lists(st.tuples(keys_st, st.integers(-50, 50)), max_size=12), max_size=6)


def _reference(
    batches: list[list[tuple[bytes, int]]], reducers: int, combiner: str | None, bounds: Array | None
) -> list[tuple[list[bytes], list[Any]]]:
    rows = [row for batch in batches for row in batch]
    keys = np.array([k for k, _ in rows], dtype=np.bytes_)
    values = np.array([v for _, v in rows], dtype=np.int64)
    parts = None if bounds is None else range_partition_of(keys, bounds)
    runs = split_sorted(keys, values, reducers, parts)
    if combiner is not None:
        runs = [combine(k, v, combiner) for k, v in runs]
    return [(k.tolist(), v.tolist()) for k, v in runs]


@settings(max_examples=100, deadline=None)
@given(
    batches_st,
    st.integers(1, 4),
    st.sampled_from([1, 30, 100, 1 << 30]),
    st.sampled_from([None, *MERGE_OP]),
    st.booleans(),
    st.booleans(),
)
def test_spilling_gives_the_same_runs_as_sorting_everything_at_once(
    batches: list[list[tuple[bytes, int]]],
    reducers: int,
    threshold: int,
    combiner: str | None,
    compress: bool,
    ranged: bool,
) -> None:
    bounds = np.array([b"b", b"c", b"\xc3"][: reducers - 1], dtype=np.bytes_) if ranged else None
    with tempfile.TemporaryDirectory() as directory:
        spiller = Spiller(directory, reducers, threshold, compress, combiner=combiner, boundaries=bounds)
        for batch in batches:
            keys = np.array([k for k, _ in batch], dtype=np.bytes_)
            spiller.add(keys, np.array([v for _, v in batch], dtype=np.int64))
        infos = spiller.finish()
        got = [read_run(info.path, info.checksum) for info in infos]
        names = sorted(p.name for p in Path(directory).iterdir())
    assert [(k.tolist(), v.tolist()) for k, v in got] == _reference(batches, reducers, combiner, bounds)
    assert names == sorted(f"part-{p}.run" for p in range(reducers))  # spills are gone
    assert [info.count for info in infos] == [len(k) for k, _ in got]


def test_tiny_threshold_spills_every_batch(tmp_path: Path) -> None:
    spiller = Spiller(tmp_path, 2, threshold_bytes=1)
    for i in range(5):
        spiller.add(np.array([b"k", b"j"]), np.array([i, -i]))
        assert spiller.buffered_bytes == 0
    assert spiller.spill_count == 5
    infos = spiller.finish()
    merged = [read_run(info.path, info.checksum) for info in infos]
    by_key = {k: v.tolist() for keys, values in merged for k, v in [(keys[0], values)] if len(keys)}
    assert by_key == {b"k": [0, 1, 2, 3, 4], b"j": [0, -1, -2, -3, -4]}
    with pytest.raises(RuntimeError):
        spiller.add(np.array([b"a"]), np.array([1]))


def test_a_single_spill_is_renamed_not_rewritten(tmp_path: Path) -> None:
    spiller = Spiller(tmp_path, 3, threshold_bytes=10, combiner="count")
    spiller.add(np.array([b"a", b"b", b"a", b"c", b"a"]), np.zeros(5, dtype=np.int8))
    assert spiller.spill_count == 1 and spiller.buffered_bytes == 0
    infos = spiller.finish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-0.run", "part-1.run", "part-2.run"]
    counts: dict[bytes, int] = {}
    for info in infos:
        keys, values = read_run(info.path, info.checksum)
        assert values.dtype == np.int64  # counts, also in the partitions that got no key
        counts.update(zip(keys.tolist(), values.tolist(), strict=True))
    assert counts == {b"a": 3, b"b": 1, b"c": 1}


def test_nothing_added_gives_empty_runs(tmp_path: Path) -> None:
    infos = Spiller(tmp_path / "new", 2, 100, compress=True).finish()
    assert [info.count for info in infos] == [0, 0]
    assert all(len(read_run(info.path, info.checksum)[0]) == 0 for info in infos)


def test_presorted_partitions_spill_and_merge(tmp_path: Path) -> None:
    spiller = Spiller(tmp_path, 2, threshold_bytes=30, prefix="m7")
    with pytest.raises(ValueError):
        spiller.add_partition(2, np.array([b"a"]), np.array([1]))
    spiller.add_partition(1, np.array([b"a", b"c"]), np.array([1, 2]))
    spiller.add_partition(0, np.array([b"b"]), np.array([3]))
    spiller.add_partition(1, np.array([b"a", b"b"]), np.array([4, 5]))
    spiller.add_partition(1, np.array([b"c"]), np.array([6]))
    infos = spiller.finish()
    assert [info.path.name for info in infos] == ["m7-0.run", "m7-1.run"]
    keys, values = read_run(infos[1].path, infos[1].checksum)
    assert (keys.tolist(), values.tolist()) == ([b"a", b"a", b"b", b"c", b"c"], [1, 4, 5, 2, 6])


def test_spiller_checks_its_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Spiller(tmp_path, 0, 10)
    with pytest.raises(ValueError):
        Spiller(tmp_path, 2, 10, combiner="mean")
    with pytest.raises(ValueError):
        Spiller(tmp_path, 3, 10, boundaries=np.array([b"m"]))
