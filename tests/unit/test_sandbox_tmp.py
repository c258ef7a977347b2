"""A sandbox's private /tmp: what an attempt left is removed, and an untouched one is not walked.

Run on a tmpfs of the machine's (/dev/shm), as the sandbox's /tmp is one; a tree there that a walk would
empty shows whether `clear` walked.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from swarm.runtime.sandbox_tmp import PrivateTmp, _mount_type


@pytest.fixture
def shm() -> Iterator[Path]:
    if not os.path.isdir("/dev/shm") or _mount_type("/dev/shm") != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm here")
    root = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _skeleton(root: Path) -> PrivateTmp:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "kept").write_text("the skeleton")
    tmp = PrivateTmp.take(str(root))
    assert tmp.skeleton is not None
    return tmp


def test_an_untouched_tmp_is_not_walked(shm: Path) -> None:
    tmp = _skeleton(shm)
    for _ in range(3):
        assert tmp.untouched()
        tmp.clear()
    assert (shm / "a" / "b" / "kept").read_text() == "the skeleton"  # a walk would have removed it


def _new_file_at_top(root: Path) -> None:
    (root / "left").write_text("x")


def _new_file_deep(root: Path) -> None:
    (root / "a" / "b" / "left").write_text("x")


def _new_tree(root: Path) -> None:
    (root / "a" / "new" / "deeper").mkdir(parents=True)
    (root / "a" / "new" / "deeper" / "left").write_text("x")


def _renamed_within(root: Path) -> None:
    (root / "a" / "first").write_text("x")
    (root / "a" / "first").rename(root / "a" / "second")


def _moved_between(root: Path) -> None:
    (root / "left").write_text("x")
    (root / "left").rename(root / "a" / "b" / "left")


def _replaced_dir(root: Path) -> None:
    shutil.rmtree(root / "a" / "b")
    (root / "a" / "b").mkdir()
    (root / "a" / "b" / "kept").write_text("not the skeleton")


def _hard_link(root: Path) -> None:
    os.link(root / "a" / "b" / "kept", root / "a" / "link")


def _swapped_name(root: Path) -> None:
    (root / "a" / "b").rename(root / "a" / "c")


def _mode(root: Path) -> None:
    (root / "a").chmod(0o777)


@pytest.mark.parametrize(
    "leave",
    [
        _new_file_at_top,
        _new_file_deep,
        _new_tree,
        _renamed_within,
        _moved_between,
        _replaced_dir,
        _hard_link,
        _swapped_name,
        _mode,
    ],
)
def test_whatever_an_attempt_left_is_seen_and_removed(shm: Path, leave: Callable[[Path], None]) -> None:
    tmp = _skeleton(shm)
    leave(shm)
    assert not tmp.untouched()
    tmp.clear()
    left = {p.relative_to(shm).as_posix() for p in shm.rglob("*")}
    assert not left - {"a", "a/b", "a/b/kept"}  # the walk may take the skeleton too: nothing holds it here


def test_once_emptied_an_untouched_tmp_is_not_walked_again(shm: Path) -> None:
    tmp = PrivateTmp.take(str(shm))  # as a sandbox's /tmp is where the node's data is elsewhere: empty
    _new_tree(shm)
    tmp.clear()
    assert not list(shm.iterdir()) and tmp.untouched()


def test_when_emptying_leaves_other_entries_than_recorded_every_attempt_walks(shm: Path) -> None:
    tmp = _skeleton(shm)
    (shm / "a" / "b" / "kept").unlink()  # the walk then takes a/b and a too: not what was recorded
    tmp.clear()
    assert not tmp.untouched()


def test_where_tmp_is_not_a_tmpfs_every_clear_walks(tmp_path: Path) -> None:
    if _mount_type(str(tmp_path)) == "tmpfs":
        pytest.skip("the test's directory is on a tmpfs here")
    (tmp_path / "kept").write_text("x")
    tmp = PrivateTmp.take(str(tmp_path))
    assert tmp.skeleton is None and not tmp.untouched()
    tmp.clear()
    assert not list(tmp_path.iterdir())


def test_the_mount_that_holds_a_path_is_found(tmp_path: Path) -> None:
    assert _mount_type("/") is not None
    assert _mount_type("/proc/self") == "proc"
    assert _mount_type(str(tmp_path / "a dir that does not exist")) == _mount_type(str(tmp_path))
