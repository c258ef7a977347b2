"""file_operation never follows a link at any component, with openat2 and with the component walk.

The attack: a directory on the way to an allowed file is swapped for a symbolic link to somewhere
else. A check on the resolved path followed by an open by name loses that race; a walk down from the
allowed root's descriptor that refuses links cannot. Each test runs once per resolver: the kernel's
`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and the `openat(O_NOFOLLOW)` walk that older kernels get.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarm import beneath
from swarm.beneath import open_beneath
from swarm.errors import TaskRefused
from swarm.plugins import file_operation
from swarm.plugins.file_operation import handler as files
from swarm.plugins.file_operation import split_beneath
from swarm.taskapi import TaskContext, TaskPolicy

INSIDE, OUTSIDE = "inside", "outside: top secret"


def _kernel_has_openat2(tmp_path: Path) -> bool:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (tmp_path / "probe").write_text("")
        opened = beneath._openat2(fd, "probe", os.O_RDONLY, 0)
    finally:
        os.close(fd)
    if opened is None:
        return False
    os.close(opened)
    return True


@pytest.fixture(params=["openat2", "walk"])
def resolver(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[str]:
    """Which resolver the test exercises; counts its calls so the test knows it was really used."""
    calls = {"openat2": 0}
    if request.param == "openat2":
        if not _kernel_has_openat2(tmp_path):
            pytest.skip("this kernel has no openat2 (Linux < 5.6, or a seccomp filter refuses it)")
        real = beneath._openat2

        def counted(*args: Any) -> int | None:
            calls["openat2"] += 1
            return real(*args)

        monkeypatch.setattr(beneath, "_openat2", counted)
    else:
        monkeypatch.setattr(beneath, "_openat2", lambda *args: None)  # as on a kernel without it
    yield request.param
    if request.param == "openat2":
        assert calls["openat2"] > 0, "openat2 was never called"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/sub/file (allowed) and outside/file (not), both readable."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "file").write_text(INSIDE)
    (outside / "file").write_text(OUTSIDE)
    return root


def ctx(root: Path) -> TaskContext:
    return TaskContext(
        "n1", "t1", 1, str(root), TaskPolicy(allow_file_operations=True, allowed_paths=(str(root),))
    )


def do(root: Path, **payload: Any) -> Any:
    files.validate(payload)
    return files.run(ctx(root), payload)


def swap_for_link(root: Path) -> None:
    """Replace the directory root/sub by a symbolic link to the outside directory."""
    os.rename(root / "sub", root / "sub.real")
    os.symlink(root.parent / "outside", root / "sub")


@pytest.mark.usefixtures("resolver")
def test_a_directory_swapped_for_a_link_is_refused_for_every_operation(tree: Path) -> None:
    swap_for_link(tree)
    target = str(tree / "sub" / "file")
    for payload in ({"op": "read"}, {"op": "stat"}, {"op": "delete"}, {"op": "write", "data": "x"},
                    {"op": "append", "data": "x"}):  # fmt: skip
        with pytest.raises(TaskRefused, match="symbolic link"):
            do(tree, path=target, **payload)
    for payload in ({"op": "list"}, {"op": "mkdir"}):
        with pytest.raises(TaskRefused, match="symbolic link"):
            do(tree, path=str(tree / "sub"), **payload)
    with pytest.raises(TaskRefused, match="symbolic link"):
        do(tree, op="mkdir", path=str(tree / "sub" / "new"))
    assert sorted(os.listdir(tree.parent / "outside")) == ["file"]
    assert (tree.parent / "outside" / "file").read_text() == OUTSIDE


def test_a_swap_in_the_middle_of_the_walk_cannot_lead_outside(
    tree: Path, resolver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap lands at the worst moment each resolver has: for the walk, right after it opened the
    directory; for openat2 (one system call), between the lexical check and the open."""
    swapped: list[bool] = []
    if resolver == "walk":
        real_open = os.open

        def open_then_swap(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            fd = real_open(path, flags, *args, **kwargs)
            if path == "sub" and not swapped:
                swapped.append(True)
                swap_for_link(tree)
            return fd

        monkeypatch.setattr(os, "open", open_then_swap)
    else:
        real_split = file_operation.split_beneath

        def split_then_swap(path: str, roots: tuple[str, ...]) -> Any:
            found = real_split(path, roots)
            swapped.append(True)
            swap_for_link(tree)
            return found

        monkeypatch.setattr(file_operation, "split_beneath", split_then_swap)
    try:
        data = do(tree, op="read", path=str(tree / "sub" / "file"))["data"]
    except TaskRefused:
        data = "refused"
    assert swapped
    assert data == (INSIDE if resolver == "walk" else "refused")  # the walk holds the real directory


@pytest.mark.usefixtures("resolver")
def test_a_racing_swap_never_reaches_outside(tree: Path) -> None:
    """A thread swaps the directory and the link back and forth while tasks read and write through it."""
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            swap_for_link(tree)
            os.unlink(tree / "sub")
            os.rename(tree / "sub.real", tree / "sub")

    flipper = threading.Thread(target=flip)
    flipper.start()
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 1.0
    try:
        while time.monotonic() < deadline:
            try:
                seen[do(tree, op="read", path=str(tree / "sub" / "file"))["data"]] = 1
                do(tree, op="append", path=str(tree / "sub" / "log"), data="x")
            except TaskRefused:
                seen["refused"] = 1
            except (FileNotFoundError, NotADirectoryError):
                seen["gone"] = 1  # caught between the rename and the link
    finally:
        stop.set()
        flipper.join()
    assert OUTSIDE not in seen and INSIDE in seen
    assert sorted(os.listdir(tree.parent / "outside")) == ["file"]


def test_the_old_check_then_open_loses_the_same_race(tree: Path) -> None:
    """The race is real: resolving, checking and then opening by name does read the outside file."""
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            swap_for_link(tree)
            os.unlink(tree / "sub")
            os.rename(tree / "sub.real", tree / "sub")

    flipper = threading.Thread(target=flip)
    flipper.start()
    escaped = False
    deadline = time.monotonic() + 5.0
    try:
        while not escaped and time.monotonic() < deadline:
            path = str(tree / "sub" / "file")
            try:
                if os.path.realpath(path).startswith(str(tree) + os.sep):
                    with open(path) as f:
                        escaped = f.read() == OUTSIDE
            except OSError:
                pass
    finally:
        stop.set()
        flipper.join()
    if not escaped:
        pytest.skip("the race window was not hit in 5 s on this machine (nothing to compare against)")


@pytest.mark.usefixtures("resolver")
def test_links_inside_the_root_are_refused_not_followed(tree: Path) -> None:
    (tree / "inner").symlink_to(tree / "sub")  # points inside, still refused: no link at any component
    with pytest.raises(TaskRefused, match="symbolic link"):
        do(tree, op="read", path=str(tree / "inner" / "file"))
    assert do(tree, op="stat", path=str(tree / "inner"))["type"] == "link"  # stat describes the link
    assert do(tree, op="delete", path=str(tree / "inner"))["deleted"]  # and delete removes it, only it
    assert (tree / "sub" / "file").read_text() == INSIDE


@pytest.mark.usefixtures("resolver")
def test_open_beneath_refuses_links_and_climbing(tree: Path) -> None:
    (tree / "up").symlink_to("..")
    root_fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = open_beneath(root_fd, ["sub", "file"], os.O_RDONLY)
        assert os.read(fd, 100) == INSIDE.encode()
        os.close(fd)
        for parts in (["up", "outside", "file"], ["up"]):
            with pytest.raises(OSError) as info:
                open_beneath(root_fd, parts, os.O_RDONLY)
            assert info.value.errno in (errno.ELOOP, errno.EXDEV)
    finally:
        os.close(root_fd)


def test_paths_are_split_lexically_and_dot_dot_is_refused(tree: Path) -> None:
    roots = (str(tree),)
    assert split_beneath(str(tree / "sub" / "file"), roots) == (str(tree), ["sub", "file"])
    assert split_beneath(str(tree) + "//sub/./file", roots) == (str(tree), ["sub", "file"])
    assert split_beneath(str(tree), roots) == (str(tree), [])
    assert split_beneath(str(tree / "sub" / ".." / "sub" / "file"), roots) is None
    assert split_beneath(str(tree.parent / "rootless"), roots) is None
    assert split_beneath("/etc/passwd", roots) is None
