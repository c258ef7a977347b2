"""A map on the submitter's machine reads its split from the file itself, and only when it may."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from swarm.mapreduce import localread
from swarm.mapreduce.app import AppSource
from swarm.mapreduce.localread import file_identity, read_local
from swarm.mapreduce.plan import plan_splits
from swarm.mapreduce.runs import read_run
from swarm.mapreduce.tasks import map_handler
from swarm.runtime.datafetch import FetchError
from swarm.taskapi import DataPlane, TaskContext, TaskPolicy

DATA = b"".join(b"line %d of the input\n" % i for i in range(1000))


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """This machine's id, as a list the test can change."""
    current = ["machine-a"]
    monkeypatch.setattr(localread, "machine_id", lambda: current[0])
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
    # every split the planner cuts carries the identity of its file
    assert {s.local["path"] for s in plan_splits((data_file,), 4096) if s.local} == {str(data_file)}


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
    monkeypatch.setattr(localread, "machine_id", lambda: None)
    assert file_identity(data_file) is None


@pytest.mark.parametrize("allowed", [True, False])
def test_a_map_task_reads_locally_instead_of_fetching(
    machine: list[str], data_file: Path, tmp_path: Path, allowed: bool
) -> None:
    (split,) = plan_splits((data_file,), None)
    payload = {
        "job": "j",
        "app": AppSource("wordcount", module="swarm.mapreduce.apps.wordcount").to_payload(),
        "params": {},
        "reducers": 1,
        "combiner": None,
        "compress": False,
        "boundaries": None,
        "index": 0,
        "input": split.to_payload("http://127.0.0.1:9"),  # nothing listens there: a fetch would fail
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
