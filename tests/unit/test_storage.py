"""The data dir under a full disk: the epoch on disk stays what it was, and the shell hands the core an
event instead of letting the error take the node down."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import orjson
import pytest

from swarm.core.events import PersistFailed
from swarm.runtime.shell import persist_epoch
from swarm.runtime.storage import NodeStorage


def _fill_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("swarm.runtime.storage.os.fsync", full)


def test_a_full_disk_is_an_event_and_the_epoch_on_disk_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = NodeStorage.open(tmp_path / "node")
    assert persist_epoch(storage, 3) is None
    with monkeypatch.context() as m:
        _fill_disk(m)
        failed = persist_epoch(storage, 4)
    assert isinstance(failed, PersistFailed) and failed.epoch == 4
    assert failed.reason.startswith("No space left on device")
    assert storage.epoch == 3 and orjson.loads((tmp_path / "node" / "node.json").read_bytes())["epoch"] == 3
    assert not (tmp_path / "node" / "node.tmp").exists(), "a half-written copy takes space a full disk lacks"
    # Space freed: the same epoch is written now, not taken for stored already.
    assert persist_epoch(storage, 4) is None
    assert orjson.loads((tmp_path / "node" / "node.json").read_bytes())["epoch"] == 4
    storage.close()
