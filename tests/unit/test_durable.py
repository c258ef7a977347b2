"""AtomicFile: the whole file or none of it, direct or through the page cache, with its checksum."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from swarm import durable
from swarm.checksum import checksum_bytes
from swarm.durable import AtomicFile

PIECES = [os.urandom(n) for n in (1, 4095, 4096, 10_000, 3, 70_000, 0, 12_345)]
WHOLE = b"".join(PIECES)


@pytest.fixture(autouse=True)
def small_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durable, "DIRECT_STAGE", 3 * durable.DIRECT_ALIGN)  # many flushes, odd tails


@pytest.mark.parametrize("direct", [True, False])
def test_pieces_of_any_size_make_the_file_and_its_checksum(tmp_path: Path, direct: bool) -> None:
    dest = tmp_path / "out"
    with AtomicFile(dest, direct=direct) as out:
        for piece in PIECES:
            out.write(memoryview(piece))
        assert not dest.exists()  # nothing at the name before the commit
        checksum = out.commit()
    assert dest.read_bytes() == WHOLE
    assert checksum == checksum_bytes(WHOLE)
    assert out.size == len(WHOLE)
    assert os.listdir(tmp_path) == ["out"]


def test_an_empty_file_and_a_replaced_one(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.write_bytes(b"old contents")
    with AtomicFile(dest) as out:
        assert out.commit() == checksum_bytes(b"")
    assert dest.read_bytes() == b""


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), AtomicFile(dest) as out:
        out.write(WHOLE)
        raise RuntimeError("the reduce failed half way")
    assert dest.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out"]


def test_a_file_system_that_refuses_direct_writes_gets_cached_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    refused = 0

    def write(fd: int, data: memoryview) -> int:
        nonlocal refused
        if os.O_DIRECT & fcntl.fcntl(fd, fcntl.F_GETFL):
            refused += 1
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(durable.os, "write", write)
    dest = tmp_path / "out"
    with AtomicFile(dest) as out:
        for piece in PIECES:
            out.write(piece)
        checksum = out.commit()
    assert dest.read_bytes() == WHOLE and checksum == checksum_bytes(WHOLE)
    assert refused <= 1  # one refused write, then none: O_DIRECT was turned off (or never on here)
