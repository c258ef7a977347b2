"""Inputs into splits: larger files cut at line ends, smaller ones packed together up to the split size."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from swarm.mapreduce.plan import MAX_AUTO_SPLIT, MIN_AUTO_SPLIT, Segment, Split, auto_split_size, plan_splits


def _file(root: Path, name: str, lines: int) -> Path:
    path = root / name
    path.write_bytes(b"".join(b"%s line %04d\n" % (name.encode(), i) for i in range(lines)))
    return path


def _covered_once(splits: list[Split], inputs: tuple[Path, ...]) -> None:
    """Every byte of every input is in exactly one segment, under the input's name."""
    by_file: dict[str, list[Segment]] = {}
    for split in splits:
        for segment in split.segments:
            by_file.setdefault(segment.name, []).append(segment)
    assert sorted(by_file) == sorted(f"in/{k}" for k in range(len(inputs)))
    for k, path in enumerate(inputs):
        segments = sorted(by_file[f"in/{k}"], key=lambda s: s.start)
        assert segments[0].start == 0 and segments[-1].end == path.stat().st_size
        assert all(a.end == b.start for a, b in pairwise(segments))
        assert {s.filename for s in segments} == {path.name}
        data = path.read_bytes()
        assert all(data[s.end - 1 : s.end] == b"\n" for s in segments)


def test_small_files_share_a_split_in_order_while_they_fit(tmp_path: Path) -> None:
    inputs = tuple(_file(tmp_path, f"f{k}", 15) for k in range(5))  # 195 bytes each
    splits = plan_splits(inputs, 400)
    assert [[s.name for s in split.segments] for split in splits] == [
        ["in/0", "in/1"],
        ["in/2", "in/3"],
        ["in/4"],
    ]
    assert all(split.size <= 400 for split in splits)
    _covered_once(splits, inputs)


def test_a_larger_file_is_cut_and_the_smaller_ones_around_it_packed(tmp_path: Path) -> None:
    inputs = (_file(tmp_path, "a", 10), _file(tmp_path, "big", 200), _file(tmp_path, "b", 10))
    splits = plan_splits(inputs, 1000)
    cut = [split for split in splits if split.segments[0].filename == "big"]  # 2,800 bytes
    assert len(cut) == 3 and all(len(split.segments) == 1 for split in cut)
    packed = [split for split in splits if split.segments[0].filename != "big"]
    assert [[s.filename for s in split.segments] for split in packed] == [["a", "b"]]
    _covered_once(splits, inputs)


def test_without_a_split_size_every_file_is_a_split_of_its_own(tmp_path: Path) -> None:
    inputs = tuple(_file(tmp_path, f"f{k}", 15) for k in range(3))
    splits = plan_splits(inputs, None)
    assert [[s.name for s in split.segments] for split in splits] == [["in/0"], ["in/1"], ["in/2"]]
    (payload,) = splits[1].to_payload("http://h:1")
    assert (payload["url"], payload["file"], payload["start"], payload["end"]) == (
        "http://h:1/f/in/1",
        "f1",
        0,
        195,
    )


MiB = 1 << 20


def test_an_automatic_split_size_fills_whole_waves_of_slots_with_bounded_splits() -> None:
    # One wave where the input allows splits of at most 128 MiB: a map per slot.
    assert auto_split_size(256 * MiB, 2) == 128 * MiB
    assert auto_split_size(256 * MiB, 4) == 64 * MiB
    # More waves where it does not, every one of them full.
    assert auto_split_size(1024 * MiB, 2) == 128 * MiB
    assert auto_split_size(300 * MiB, 2) == 75 * MiB  # two waves of 75, not 128 + 128 + 44
    assert auto_split_size(1024 * MiB, 3) == -(-1024 * MiB // 9)
    # Never below the floor, whatever the slots; no slot heard counts as one.
    assert auto_split_size(10 * MiB, 100) == MIN_AUTO_SPLIT
    assert auto_split_size(0, 2) == MIN_AUTO_SPLIT
    assert auto_split_size(512 * MiB, 0) == MAX_AUTO_SPLIT


def test_the_rest_of_a_cut_file_joins_its_last_split_unless_it_is_a_tenth_or_more(tmp_path: Path) -> None:
    records = tmp_path / "records.bin"
    # Each cut at a 100-byte record falls 40 bytes short of the 10,040-byte split size: 8 splits would
    # leave 300 bytes over, which go with the last one rather than into a map of their own.
    records.write_bytes(bytes(80_300))
    assert [s.size for s in plan_splits((records,), 10_040, 100)] == [10_000] * 7 + [10_300]
    records.write_bytes(bytes(82_000))  # 2,000 bytes over: more than a tenth of a split
    assert [s.size for s in plan_splits((records,), 10_040, 100)] == [10_000] * 8 + [2_000]
    lines = _file(tmp_path, "lines", 1000)  # 16,000 bytes
    assert [s.size for s in plan_splits((lines,), 15_000)] == [16_000]
    _covered_once(plan_splits((lines,), 1_000), (lines,))
