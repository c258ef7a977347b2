"""The directories the executor gives task code, and the task user's access to them.

Each slot has a directory of its own under the node's work dir (mode 0711: the task user passes through
to its attempt's directory but cannot list the others), and every attempt a private work directory inside
it (`new_attempt_dir`: mode 0700, owned by the task user, a name no other task can guess), empty when
the attempt starts. One that an attempt left exactly as it got it (`untouched`) may be passed on to the
slot's next attempt, as it is or under a new name (`renamed`), instead of removed and made again (the
executor's `_after_attempt` says when). Where task code runs as another user, that user is also given
the data-plane directory (`hand_over`), and the owner is told about allowed paths it cannot write
(`warn_unwritable`).

Task code may leave anything behind, so removal (`rmtree`) never follows a link it finds and copes with
modes the task took away.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import stat
import tempfile
from dataclasses import dataclass
from typing import Any

from swarm.runtime.executor_proc import is_root
from swarm.runtime.executor_worker import TaskUser

__all__ = [
    "AttemptDir",
    "fresh_dir",
    "hand_over",
    "new_attempt_dir",
    "renamed",
    "rmtree",
    "untouched",
    "warn_unwritable",
]

log = logging.getLogger(__name__)


def _skip_missing(func: Any, path: str, exc_info: Any) -> None:
    if not issubclass(exc_info[0], FileNotFoundError):  # gone meanwhile is as good as removed
        raise exc_info[1]


def rmtree(path: str) -> None:
    """Remove a tree whatever modes task code left on it; never follows a link it finds there."""
    try:
        os.rmdir(path)  # most attempts leave their directory empty: one system call
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    try:
        shutil.rmtree(path, onerror=_skip_missing)
    except OSError:
        if is_root():
            return  # modes do not stop root: what failed is not ours to fight
        # Task code ran as ourselves and may have taken the write bit off its directories. Any link it
        # left leads only to files we own, so chmod's following it gives nobody anything.
        for root, dirs, _ in os.walk(path):
            for name in dirs:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(root, name), stat.S_IRWXU)
        shutil.rmtree(path, ignore_errors=True)


def fresh_dir(path: str) -> None:
    """An empty directory others may pass through (to their attempt's directory) but not list."""
    if os.path.lexists(path):
        rmtree(path)  # attempts a crashed node left behind
    os.mkdir(path, 0o711)
    os.chmod(path, 0o711)  # whatever the umask


@dataclass(frozen=True, slots=True)
class AttemptDir:
    """An attempt's directory and what it looked like when handed out (see `untouched`)."""

    path: str
    looks: tuple[int, ...]


def _looks(path: str) -> tuple[int, ...]:
    st = os.stat(path, follow_symlinks=False)
    return (st.st_mode, st.st_uid, st.st_gid, st.st_nlink, st.st_mtime_ns, st.st_ctime_ns)


def new_attempt_dir(parent: str, user: TaskUser | None) -> AttemptDir:
    """A new private directory for an attempt, inside its slot's `parent`, owned by the task `user`."""
    path = tempfile.mkdtemp(prefix="a-", dir=parent)  # 0700, a name no other task can guess
    if user is not None:
        os.chown(path, user.uid, user.gid)
    return AttemptDir(path, _looks(path))


def untouched(d: AttemptDir) -> bool:
    """Whether an attempt left its directory as it got it: empty, same mode, owner and times, and no
    extended attributes (an ACL is one). The times alone would not do: they tick coarsely."""
    try:
        if _looks(d.path) != d.looks or os.listxattr(d.path, follow_symlinks=False):
            return False
        with os.scandir(d.path) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def renamed(d: AttemptDir) -> AttemptDir:
    """The same empty directory under a new name, no other attempt's: it is the next attempt's."""
    path = os.path.join(os.path.dirname(d.path), f"a-{secrets.token_hex(6)}")
    os.rename(d.path, path)
    return AttemptDir(path, _looks(path))  # a rename changes the ctime


def hand_over(directory: str, user: TaskUser) -> None:
    """Give the task user the data-plane directory, where map tasks write (the data server is root)."""
    if not os.path.isdir(directory) or os.stat(directory).st_uid == user.uid:
        return
    for root, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)
    os.chown(directory, user.uid, user.gid)


def warn_unwritable(paths: tuple[str, ...], user: TaskUser) -> None:
    """Say so when an allowed path is closed to the task user (by its mode bits; ACLs are not read):
    the owner allowed tasks there, and would otherwise only see tasks fail or fall back."""
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        mode = st.st_mode
        if not (
            (st.st_uid == user.uid and mode & stat.S_IWUSR)
            or (st.st_gid == user.gid and mode & stat.S_IWGRP)
            or mode & stat.S_IWOTH
        ):
            log.warning(
                "allowed path %s is not writable by %s, the user tasks run as: make it so, or set "
                "[tasks] run_as to its owner, for tasks to write there",
                path,
                user.name,
            )
