"""Tasks on the submitter's machine read their split and write their output themselves, only when they may."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from swarm.checksum import checksum_bytes
from swarm.errors import InvalidPayload, InvalidSpec
from swarm.mapreduce import locality, tasks
from swarm.mapreduce.app import App, AppSource
from swarm.mapreduce.locality import file_identity, open_local_output, read_local, read_own_run
from swarm.mapreduce.plan import MapReduceSpec, build_job, new_capability, plan_splits
from swarm.mapreduce.runs import read_run
from swarm.mapreduce.tasks import map_handler, reduce_handler
from swarm.runtime.datafetch import FetchError
from swarm.taskapi import DataPlane, TaskContext, TaskPolicy

DATA = b"".join(b"line %d of the input\n" % i for i in range(1000))
DEAD_URL = "http://127.0.0.1:9"  # nothing listens there: any fetch or upload fails
TOKEN = new_capability()


def _with_node_dir(ctx: TaskContext, tmp_path: Path) -> TaskContext:
    return TaskContext(
        ctx.node_id, ctx.task_id, ctx.attempt, ctx.work_dir, ctx.policy, DataPlane(str(tmp_path / "node"))
    )


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """This machine's id, as a list the test can change."""
    current = ["machine-a"]
    monkeypatch.setattr(locality, "machine_id", lambda: current[0])
    return current


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "data.txt"
    path.parent.mkdir()
    path.write_bytes(DATA)
    return path


def test_a_split_is_read_from_the_file_where_allowed(machine: list[str], data_file: Path) -> None:
    identity = file_identity(data_file)
    allowed = (str(data_file.parent),)
    assert read_local(identity, 100, 2000, allowed) == DATA[100:2000]
    assert read_local(identity, 0, len(DATA), allowed) == DATA
    # a split that starts past a page boundary: only it is mapped, from the boundary below it
    assert read_local(identity, 9000, 17001, allowed) == DATA[9000:17001]
    assert read_local(identity, 500, 500, allowed) == b""
    # every split the planner cuts carries the identity of its file
    splits = plan_splits((data_file,), 4096)
    assert {seg.local["path"] for s in splits for seg in s.segments if seg.local} == {str(data_file)}


def test_no_local_read_without_permission_or_on_another_machine(
    machine: list[str], data_file: Path, tmp_path: Path
) -> None:
    identity = file_identity(data_file)
    assert read_local(identity, 0, 10, ()) is None  # the node's owner opened nothing to tasks
    assert read_local(identity, 0, 10, (str(tmp_path / "elsewhere"),)) is None
    machine[0] = "machine-b"
    assert read_local(identity, 0, 10, (str(tmp_path),)) is None


def test_no_local_read_of_a_file_that_changed_or_a_bad_identity(
    machine: list[str], data_file: Path, tmp_path: Path
) -> None:
    allowed = (str(tmp_path),)
    identity = file_identity(data_file)
    assert identity is not None
    for bad in (None, {}, "x", {**identity, "path": 7}, {**identity, "ino": identity["ino"] + 1}):
        assert read_local(bad, 0, 10, allowed) is None
    assert read_local(identity, 0, len(DATA) + 1, allowed) is None  # past the end
    os.utime(data_file, ns=(0, identity["mtime_ns"] + 1))  # the same bytes, touched
    assert read_local(identity, 0, 10, allowed) is None
    data_file.unlink()
    assert read_local(identity, 0, 10, allowed) is None


def test_without_a_machine_id_nothing_is_recorded(monkeypatch: pytest.MonkeyPatch, data_file: Path) -> None:
    monkeypatch.setattr(locality, "machine_id", lambda: None)
    assert file_identity(data_file) is None


@pytest.mark.parametrize("allowed", [True, False])
def test_a_map_task_reads_locally_instead_of_fetching(
    machine: list[str], data_file: Path, tmp_path: Path, allowed: bool
) -> None:
    (split,) = plan_splits((data_file,), None)
    payload = {
        "job": "j",
        "token": TOKEN,
        "app": AppSource("wordcount", module="swarm.mapreduce.apps.wordcount").to_payload(),
        "params": {},
        "reducers": 1,
        "combiner": None,
        "compress": False,
        "boundaries": None,
        "index": 0,
        "input": split.to_payload(DEAD_URL),
    }
    policy = TaskPolicy(allowed_paths=(str(data_file.parent),) if allowed else ())
    ctx = TaskContext("n1", "j.m0", 1, str(tmp_path), policy, DataPlane(str(tmp_path / "node"), "http://x"))
    if not allowed:
        with pytest.raises(FetchError):
            map_handler.run(ctx, payload)
        return
    result = map_handler.run(ctx, payload)
    keys, counts = read_run(tmp_path / "node" / result["runs"][0]["path"])
    assert dict(zip(keys.tolist(), counts.tolist(), strict=True))[b"line"] == 1000
    assert result["bytes_in"] == len(DATA) and np.sum(counts) == 5000


def write_local(target: dict[str, Any], body: memoryview, allowed: tuple[str, ...]) -> bool:
    """Whether the output could be written through `open_local_output`, as the reducer does."""
    out = open_local_output(target, allowed)
    if out is None:
        return False
    with out:
        out.write(body)
        out.commit()
    return True


def test_an_output_is_written_in_place_where_allowed(machine: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = {**file_identity(out), "name": "mr-out-0"}  # type: ignore[dict-item]
    body = memoryview(b"a 1\nb 2\n")
    assert write_local(target, body, (str(tmp_path),))
    assert write_local(target, memoryview(b"c 3\n"), (str(tmp_path),))
    assert (out / "mr-out-0").read_bytes() == b"c 3\n"  # a later attempt replaces it whole
    write_local(target, body, (str(tmp_path),))
    assert sorted(p.name for p in out.iterdir()) == ["mr-out-0"]
    assert (out / "mr-out-0").read_bytes() == b"a 1\nb 2\n"


def test_no_output_in_place_without_permission_elsewhere_or_in_another_directory(
    machine: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = {**file_identity(out), "name": "mr-out-0"}  # type: ignore[dict-item]
    body = memoryview(b"x")
    assert write_local(target, body, ()) is False
    for name in ("../escape", "a/b", "", ".."):
        assert write_local({**target, "name": name}, body, (str(tmp_path),)) is False
    assert write_local({**target, "ino": target["ino"] + 1}, body, (str(tmp_path),)) is False
    machine[0] = "machine-b"
    assert write_local(target, body, (str(tmp_path),)) is False
    assert list(out.iterdir()) == [] and not (tmp_path / "escape").exists()


def test_a_reduce_on_the_submitters_machine_writes_its_output_itself(
    machine: list[str], data_file: Path, tmp_path: Path
) -> None:
    """Nothing listens at the submitter's or the mapper's URL here: the map output cannot be fetched, so
    the reducer recomputes it from the split (read locally) and writes mr-out-0 in place."""
    out = tmp_path / "out"
    out.mkdir()
    spec = MapReduceSpec(AppSource("wordcount", module="swarm.mapreduce.apps.wordcount"), (data_file,), 1, {})
    job = build_job(
        "j", spec, plan_splits((data_file,), None), DEAD_URL, None, file_identity(out), token=TOKEN
    )
    mapped, reduce_task = job.tasks
    ctx = TaskContext("n1", "j", 1, str(tmp_path), TaskPolicy(allowed_paths=(str(tmp_path),)), DataPlane())
    map_result = {**map_handler.run(_with_node_dir(ctx, tmp_path), mapped.payload), "url": DEAD_URL}
    result = reduce_handler.run(ctx, {**reduce_task.payload, "previous": [map_result]})
    assert result["recomputed_maps"] == 1
    assert (out / "mr-out-0").read_bytes().splitlines()[-1] == b"the 1000"
    assert result["bytes"] == len((out / "mr-out-0").read_bytes())
    assert result["checksum"] is None  # written in place: no transfer for a checksum to guard


def test_a_reducer_reads_the_runs_its_own_node_holds(tmp_path: Path) -> None:
    run = tmp_path / "mr" / "j" / "m0-a1" / "part-0.run"
    run.parent.mkdir(parents=True)
    run.write_bytes(b"run bytes")
    good = checksum_bytes(b"run bytes")
    assert read_own_run(str(tmp_path), "mr/j/m0-a1/part-0.run", good, job="j") == b"run bytes"
    assert read_own_run(str(tmp_path), "mr/j/m0-a1/part-0.run", checksum_bytes(b"other"), job="j") is None
    for bad in ("/etc/passwd", "mr/../../x", "mr//j", "mr/j/../j/m0-a1/part-0.run", "missing.run", 7):
        assert read_own_run(str(tmp_path), bad, good, job="j") is None
    assert read_own_run("", "mr/j/m0-a1/part-0.run", good, job="j") is None
    # another job's run is not this job's to read, even on the node that holds it
    assert read_own_run(str(tmp_path), "mr/j/m0-a1/part-0.run", good, job="k") is None


def test_a_reduce_on_the_mappers_node_reads_its_runs_instead_of_fetching(
    machine: list[str], data_file: Path, tmp_path: Path
) -> None:
    """Nothing listens at the mapper's URL: the reducer on the mapper's node reads the run from its data
    directory; a reducer on another node cannot fetch it and recomputes it from the split."""
    out = tmp_path / "out"
    out.mkdir()
    spec = MapReduceSpec(AppSource("wordcount", module="swarm.mapreduce.apps.wordcount"), (data_file,), 1, {})
    job = build_job(
        "j", spec, plan_splits((data_file,), None), DEAD_URL, None, file_identity(out), token=TOKEN
    )
    mapped, reduce_task = job.tasks
    policy = TaskPolicy(allowed_paths=(str(tmp_path),))
    mapper = _with_node_dir(TaskContext("n1", "j", 1, str(tmp_path), policy), tmp_path)
    previous = [{**map_handler.run(mapper, mapped.payload), "url": DEAD_URL}]
    for node, recomputed in (("n1", 0), ("n2", 1)):
        ctx = _with_node_dir(TaskContext(node, "j", 1, str(tmp_path), policy), tmp_path)
        result = reduce_handler.run(ctx, {**reduce_task.payload, "previous": previous})
        assert result["recomputed_maps"] == recomputed
        assert (out / "mr-out-0").read_bytes().splitlines()[-1] == b"the 1000"


@pytest.mark.parametrize("app", ["wordcount", "sort"])
def test_a_reduce_in_many_small_chunks_writes_what_one_chunk_does(
    app: str, machine: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several maps' runs (own node, mapped), merged and written a few rows at a time: the same file."""
    rng = np.random.default_rng(7)
    data = tmp_path / "input"
    if app == "sort":  # few distinct keys, so groups span chunk boundaries
        rows = rng.integers(65, 91, (600, 100), dtype=np.uint8)
        rows[:, 1:10] = ord("k")
        data.write_bytes(rows.tobytes())
    else:
        data.write_bytes(b"\n".join(rng.choice([b"a", b"bb", b"ccc", b"the"], 12_000).tolist()) + b"\n")
    source = AppSource(app, module=f"swarm.mapreduce.apps.{app}")
    outputs = []
    for chunk in (1 << 30, 250):
        monkeypatch.setattr(tasks, "REDUCE_CHUNK", chunk)
        out = tmp_path / f"out-{chunk}"
        out.mkdir()
        splits = plan_splits((data,), 20_000, 100 if app == "sort" else None)
        job = build_job(
            "j",
            MapReduceSpec(source, (data,), 1, {}),
            splits,
            DEAD_URL,
            None,
            file_identity(out),
            token=TOKEN,
        )
        *maps, reduce_task = job.tasks
        policy = TaskPolicy(allowed_paths=(str(tmp_path),))
        ctx = _with_node_dir(TaskContext("n1", "j", 1, str(tmp_path), policy, DataPlane()), tmp_path)
        results = [{**map_handler.run(ctx, m.payload), "url": DEAD_URL} for m in maps]
        result = reduce_handler.run(ctx, {**reduce_task.payload, "previous": results})
        assert len(maps) >= 2 and result["recomputed_maps"] == 0 and result["local_output"]
        outputs.append((out / "mr-out-0").read_bytes())
    assert outputs[0] == outputs[1] and len(outputs[0]) > 0


class _SeesItsInput:
    """An app module that records what input its map was given, and of what type."""

    COMBINER = "sum"

    def __init__(self, buffer_input: object) -> None:
        self.BUFFER_INPUT = buffer_input
        self.seen: list[type] = []
        self.pieces: list[bytes | memoryview] = []

    def map_arrays(self, filename: str, data: bytes | memoryview, params: dict[str, str]) -> tuple[Any, Any]:
        self.seen.append(type(data))
        self.pieces.append(data)
        return np.array([bytes(data[:4])]), np.array([1])


@pytest.mark.parametrize(("buffer_input", "given"), [(True, memoryview), (False, bytes)])
def test_a_mapped_split_reaches_only_an_app_that_takes_buffers_uncopied(
    machine: list[str], data_file: Path, tmp_path: Path, buffer_input: bool, given: type
) -> None:
    module = _SeesItsInput(buffer_input)
    app = App("sees", module, {})  # type: ignore[arg-type]
    view = read_local(file_identity(data_file), 0, len(DATA), (str(tmp_path),))
    assert isinstance(view, memoryview)
    keys, _ = app.map("data.txt", view)
    assert module.seen == [given] and keys.tolist() == [b"line"]


def test_an_app_whose_buffer_input_is_not_a_bool_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="BUFFER_INPUT must be True or False"):
        App("odd", _SeesItsInput("yes"), {})  # type: ignore[arg-type]


class _MapsSplitsOnly:
    """An app module with a whole-split map of arrays beside a record map, not an array one."""

    COMBINER = "sum"

    def map(self, filename: str, contents: str) -> list[tuple[str, str]]:
        return [("x", "1")]

    def map_split_arrays(self, files: list[tuple[str, bytes]], params: dict[str, str]) -> tuple[Any, Any]:
        return np.array([b"x"]), np.array([len(files)])


def test_a_whole_split_map_needs_the_per_piece_array_map_beside_it() -> None:
    with pytest.raises(InvalidSpec, match="map_split_arrays must be a function beside map_arrays"):
        App("odd", _MapsSplitsOnly(), {})  # type: ignore[arg-type]


def test_a_mapped_split_larger_than_a_map_call_is_cut_at_line_ends(
    machine: list[str], data_file: Path, tmp_path: Path
) -> None:
    view = read_local(file_identity(data_file), 0, len(DATA), (str(tmp_path),))
    assert view is not None
    module = _SeesItsInput(True)
    module.MAP_BYTES = 1000  # type: ignore[attr-defined]
    batches = list(App("cut", module, {}).map_batches([("data.txt", view)]))  # type: ignore[arg-type]
    pieces = [bytes(piece) for piece in module.pieces]
    assert len(batches) == len(pieces) > 1 and b"".join(pieces) == DATA
    assert all(p.endswith(b"\n") for p in pieces) and max(len(p) for p in pieces) < 1100


def test_a_packed_split_is_mapped_file_by_file_and_recomputed_whole(
    machine: list[str], data_file: Path, tmp_path: Path
) -> None:
    """Two small files in one split: the map reads both and maps each under its own name (the indexer
    lists the file of every word); a reducer that cannot fetch the map's output maps both again."""
    other = data_file.parent / "other.txt"
    other.write_bytes(b"solo words\n" * 10)
    spec = MapReduceSpec(
        AppSource("indexer", module="swarm.mapreduce.apps.indexer"), (data_file, other), 1, {}
    )
    (split,) = plan_splits(spec.inputs, 1 << 20)
    assert [s.filename for s in split.segments] == ["data.txt", "other.txt"]
    out = tmp_path / "out"
    out.mkdir()
    job = build_job("j", spec, [split], DEAD_URL, None, file_identity(out), token=TOKEN)
    mapped, reduce_task = job.tasks
    ctx = TaskContext("n1", "j", 1, str(tmp_path), TaskPolicy(allowed_paths=(str(tmp_path),)), DataPlane())
    map_result = map_handler.run(_with_node_dir(ctx, tmp_path), mapped.payload)
    assert map_result["bytes_in"] == len(DATA) + 110 and map_result["local_input"]
    keys, files = read_run(tmp_path / "node" / map_result["runs"][0]["path"])
    index = dict(zip(keys.tolist(), files.tolist(), strict=True))
    assert index[b"solo"] == b"other.txt" and index[b"line"] == b"data.txt"
    result = reduce_handler.run(ctx, {**reduce_task.payload, "previous": [{**map_result, "url": DEAD_URL}]})
    assert result["recomputed_maps"] == 1
    lines = dict(line.split(b" ", 1) for line in (out / "mr-out-0").read_bytes().splitlines())
    assert lines[b"solo"] == b"1 other.txt" and lines[b"line"] == b"1 data.txt"  # files per word, then which


def test_a_map_input_must_be_a_list_of_segments(tmp_path: Path) -> None:
    ctx = TaskContext("n1", "j.m0", 1, str(tmp_path), TaskPolicy(), DataPlane(str(tmp_path / "node")))
    base = {"job": "j", "token": TOKEN, "app": {}, "params": {}, "reducers": 1, "combiner": None}
    base |= {"compress": False, "boundaries": None, "index": 0}
    for bad in ({"url": DEAD_URL, "file": "f", "start": 0, "end": 1}, [], ["x"], "in/0"):
        with pytest.raises(InvalidPayload, match="list of file segments"):
            map_handler.run(ctx, {**base, "input": bad})
