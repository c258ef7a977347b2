"""Emptying a sandbox's private /tmp and /dev/shm after each attempt, and knowing when there is nothing to
empty.

A sandboxed worker's /tmp and /dev/shm are tmpfs of its own (`executor_proc.private_dirs`); in /tmp bwrap
also made the directories above every path it binds there, with the mount points at their ends. Whatever
a task leaves in them must be gone before the next attempt, but walking /tmp after every attempt cost a
trivial task's worker 68 system calls where the node's data directory sits under /tmp, about 40 % of
the worker's CPU.

So `PrivateTmp.take` first records how such a directory looked before any task ran: every entry of
its file system (not below the mount points) with a fingerprint of inode, mode, owner, links, size and
change time. `clear` then walks only when a fingerprint changed. That suffices because tmpfs counts a
directory's entries in its size: whatever a task left anywhere below it made the directory holding it
bigger, or replaced, moved or removed an entry that was there (that entry's path then fails or shows
another inode). A task's programs are all dead by then (`executor_worker._leave_attempt`), so nothing
changes the directory between the look and the next attempt. Where it is not a tmpfs, or a file made
there does not change its size (a kernel that counted otherwise), every `clear` walks, as before.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat

__all__ = ["PrivateTmp"]

_Fingerprint = tuple[int, ...]


def _fingerprint(st: os.stat_result, root_dev: int) -> _Fingerprint:
    if st.st_dev != root_dev:
        return (st.st_dev, st.st_ino)  # a mount point: what is below it is not ours to empty
    return (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_nlink, st.st_size, st.st_ctime_ns)


def _mount_type(path: str) -> str | None:
    """The file system type of the mount that holds `path` (the longest mount point above it)."""
    best, found = "", None
    with contextlib.suppress(OSError), open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 3:
                continue
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])  # " " is \040 there
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, found = point, fields[2]
    return found


def _counts_entries(root: str) -> bool:
    """Whether a file made in `root` changes its size, and removing it changes it back."""
    probe = os.path.join(root, f".swarm-probe-{os.getpid()}")
    try:
        before = os.lstat(root).st_size
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        try:
            with_file = os.lstat(root).st_size
        finally:
            os.unlink(probe)
        return with_file != before and os.lstat(root).st_size == before
    except OSError:
        return False


def _skeleton(root: str) -> dict[str, _Fingerprint] | None:
    try:
        return dict(_walk(root, os.lstat(root).st_dev))
    except (OSError, RecursionError):
        return None


def _walk(root: str, root_dev: int) -> list[tuple[str, _Fingerprint]]:
    found = [(root, _fingerprint(os.lstat(root), root_dev))]
    with os.scandir(root) as entries:
        children = [(entry.path, entry.stat(follow_symlinks=False)) for entry in entries]
    for path, st in children:
        if st.st_dev == root_dev and stat.S_ISDIR(st.st_mode):
            found += _walk(path, root_dev)
        else:
            found.append((path, _fingerprint(st, root_dev)))
    return found


def _clear_dir(dir_fd: int, dev: int) -> None:
    """Empty a directory of file system `dev`, never descending into another one.

    The private /tmp holds the mount points of the paths bound below it (a work dir under /tmp):
    those are other file systems, and are skipped, as are the directories bwrap made to hold them,
    which the task user cannot remove. A directory the task made and then closed to itself (mode 0500)
    is opened up first: what it holds would otherwise reach the next attempt.
    """
    with os.scandir(dir_fd) as entries:
        found = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    for name, is_dir in found:
        with contextlib.suppress(OSError):
            if not is_dir:
                os.unlink(name, dir_fd=dir_fd)
                continue
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if st.st_dev != dev:
                continue
            if st.st_uid == os.geteuid() and st.st_mode & 0o700 != 0o700:
                os.chmod(name, 0o700, dir_fd=dir_fd)  # a directory, not a link: nothing runs to swap it
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                _clear_dir(sub, dev)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=dir_fd)


class PrivateTmp:
    """A sandbox's private tmpfs (/tmp, /dev/shm) and, where it can be trusted, how it looks with nothing
    of any task in it."""

    def __init__(self, root: str, skeleton: dict[str, _Fingerprint] | None) -> None:
        """Use `take`."""
        self.root = root
        #: Every entry below `root` (and `root` itself) with its fingerprint; None: walk every time.
        self.skeleton = skeleton

    @classmethod
    def take(cls, root: str) -> PrivateTmp:
        """Record `root` as it is now: call before the first attempt, after the worker's confinement."""
        skeleton = None
        if _mount_type(root) == "tmpfs" and _counts_entries(root):
            skeleton = _skeleton(root)
        return cls(root, skeleton)

    def untouched(self) -> bool:
        """Whether every entry is as recorded, and no other was added anywhere."""
        if self.skeleton is None:
            return False
        root_dev = self.skeleton[self.root][0]
        try:
            return all(_fingerprint(os.lstat(path), root_dev) == seen for path, seen in self.skeleton.items())
        except OSError:
            return False

    def clear(self) -> None:
        """Remove what the last attempt left, unless it left nothing (never a host directory bound
        here, see `_clear_dir`)."""
        if self.untouched():
            return
        with contextlib.suppress(OSError, RecursionError):
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                _clear_dir(fd, os.fstat(fd).st_dev)
            finally:
                os.close(fd)
        if self.skeleton is not None:
            # Emptying changed the times of the directories it emptied. Where exactly the recorded
            # entries are left, their new fingerprints stand; where anything else is (what could not be
            # removed), the old ones do, and every attempt walks.
            after = _skeleton(self.root)
            if after is not None and after.keys() == self.skeleton.keys():
                self.skeleton = after
