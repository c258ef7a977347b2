"""The `file_operation` task: read, write, list or change files inside the node's allowed paths.

It is off unless the node's owner sets `allow_file_operations`, and even then it works only inside
`allowed_paths` (none listed means nowhere).

A path is never checked once and then reopened by name: between the two, a directory on the way could
be swapped for a symbolic link to anywhere. Instead the allowed root is opened once and every operation
walks down from that descriptor without following a link at any component: with `openat2` and
`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the kernel has it (Linux 5.6), else one `openat` per
component with `O_NOFOLLOW` (and `O_DIRECTORY` on the way). The operation itself then acts on the
parent directory's descriptor (`unlinkat`, `mkdirat`, `renameat`, ...), so what it touches is what was
walked. A symbolic link inside the root is therefore refused, not followed, even where it would point
inside; `..` and absolute components are refused before anything is opened.

Writes go to a temporary file that is renamed into place, so readers never see half a file. Reads and
listings are bounded so that one task cannot ship a disk image through the broker.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from typing import Any

from swarm import __version__
from swarm.beneath import CLOEXEC, DIRECTORY, NOFOLLOW, NONBLOCK, open_beneath, open_dir_nofollow
from swarm.errors import InvalidPayload, TaskRefused
from swarm.taskapi import TaskContext

__all__ = [
    "MAX_ENTRIES",
    "MAX_READ",
    "MAX_WRITE",
    "OPS",
    "FileOperationHandler",
    "handler",
    "split_beneath",
]

OPS = frozenset({"read", "write", "append", "list", "stat", "delete", "mkdir"})
MAX_READ = 1024 * 1024
MAX_WRITE = 16 * 1024 * 1024
MAX_ENTRIES = 10_000


def split_beneath(path: str, roots: tuple[str, ...]) -> tuple[str, list[str]] | None:
    """(root, names below it) for the allowed root that `path` lies in, as spelled; None when none.

    Purely lexical: nothing is resolved here, so nothing can change between this and the walk. A root
    may be given as configured or as its resolved form. `..` anywhere is refused outright.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    best: tuple[str, list[str]] | None = None
    for root in roots:
        for spelling in {os.path.normpath(root), os.path.realpath(root)}:
            root_parts = [p for p in spelling.split("/") if p]
            if parts[: len(root_parts)] == root_parts and (best is None or len(root_parts) > len(best[1])):
                best = (root, root_parts)
    return None if best is None else (best[0], parts[len(best[1]) :])


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "link" if stat.S_ISLNK(mode) else "other"


class _Target:
    """One resolved request: the allowed root's descriptor and the names below it."""

    def __init__(self, root_fd: int, parts: list[str], path: str) -> None:
        self.root_fd, self.parts, self.path = root_fd, parts, path

    def open(self, parts: list[str], flags: int, mode: int = 0o644) -> int:
        return open_beneath(self.root_fd, parts, flags, mode)

    def open_dir(self, parts: list[str]) -> int:
        """A directory's descriptor. Not with O_DIRECTORY, which turns a link's ELOOP into ENOTDIR;
        O_NONBLOCK so that a FIFO in its place cannot hang the open."""
        fd = self.open(parts, os.O_RDONLY | NONBLOCK)
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), self.path)
        return fd

    @contextlib.contextmanager
    def parent(self) -> Iterator[tuple[int, str]]:
        """The parent directory's descriptor and the last name, for the *at system calls."""
        if not self.parts:
            raise TaskRefused(f"file_operation: refusing to change the allowed root {self.path!r} itself")
        fd = self.open_dir(self.parts[:-1])
        try:
            yield fd, self.parts[-1]
        finally:
            os.close(fd)


def _read(t: _Target) -> dict[str, Any]:
    fd = t.open(t.parts, os.O_RDONLY | NONBLOCK)  # O_NONBLOCK: a FIFO must not hang the worker
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise IsADirectoryError(f"file_operation: {t.path!r} is not a regular file")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_READ + 1)
    text = data[:MAX_READ].decode("utf-8", errors="replace")
    return {"path": t.path, "data": text, "size": info.st_size, "truncated": len(data) > MAX_READ}


def _write(t: _Target, data: bytes) -> dict[str, Any]:
    with t.parent() as (dir_fd, name):
        try:
            existing = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            mode = 0o644  # a private temporary's 0o600 would hide the file from the owner's other programs
        else:
            if stat.S_ISLNK(existing.st_mode):  # as a read would: a link is refused, never replaced
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), t.path)
            mode = stat.S_IMODE(existing.st_mode)
        tmp = f".swarm-write-{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                os.fchmod(f.fileno(), mode)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
    return {"path": t.path, "written": len(data)}


def _append(t: _Target, data: bytes) -> dict[str, Any]:
    fd = t.open(t.parts, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "ab") as f:
        f.write(data)
    return {"path": t.path, "written": len(data)}


def _list(t: _Target) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    truncated = False
    fd = t.open_dir(t.parts)
    try:
        with os.scandir(fd) as it:
            for entry in it:
                if len(entries) >= MAX_ENTRIES:
                    truncated = True
                    break
                st = entry.stat(follow_symlinks=False)
                entries.append({"name": entry.name, "type": _kind(st.st_mode), "size": st.st_size})
    finally:
        os.close(fd)
    entries.sort(key=lambda e: e["name"])
    return {"path": t.path, "entries": entries, "truncated": truncated}


def _stat(t: _Target) -> dict[str, Any]:
    if t.parts:
        with t.parent() as (dir_fd, name):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    else:
        st = os.fstat(t.root_fd)
    return {"path": t.path, "type": _kind(st.st_mode), "size": st.st_size, "mtime": st.st_mtime,
            "mode": stat.S_IMODE(st.st_mode)}  # fmt: skip


def _delete(t: _Target) -> dict[str, Any]:
    if not t.parts:
        raise TaskRefused(f"file_operation: refusing to delete the allowed root {t.path!r}")
    with t.parent() as (dir_fd, name):
        if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            os.rmdir(name, dir_fd=dir_fd)  # only empty ones: no recursive deletes from a remote request
        else:
            os.unlink(name, dir_fd=dir_fd)  # a link is removed itself, never what it points to
    return {"path": t.path, "deleted": True}


def _mkdir(t: _Target) -> dict[str, Any]:
    fd = os.dup(t.root_fd)
    try:
        for name in t.parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=fd)
            nxt = open_dir_nofollow(name, fd)  # refuses a link found there or planted meanwhile
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    return {"path": t.path, "created": True}


def _refused(path: str, exc: OSError) -> TaskRefused:
    return TaskRefused(f"file_operation: path {path!r} leads through a symbolic link or outside the node's "
                       f"allowed paths ({exc.strerror})")  # fmt: skip


class FileOperationHandler:
    """`{"op": ..., "path": absolute str, "data": str for write/append}` -> a dict describing the result."""

    name = "file_operation"
    version = __version__

    def validate(self, payload: dict[str, Any]) -> None:
        """Check the shape; the policy and the path check are applied where it runs (`run`)."""
        if not isinstance(payload, dict):
            raise InvalidPayload("file_operation: payload must be a JSON object")
        op, path, data = payload.get("op"), payload.get("path"), payload.get("data")
        if op not in OPS:
            raise InvalidPayload(f"file_operation: 'op' must be one of {sorted(OPS)}, got {op!r}")
        if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
            raise InvalidPayload("file_operation: 'path' must be an absolute path")
        if op in ("write", "append"):
            if not isinstance(data, str):
                raise InvalidPayload(f"file_operation: {op} needs 'data' as a string")
            if len(data) > MAX_WRITE:
                raise InvalidPayload(f"file_operation: 'data' is larger than {MAX_WRITE} characters")
        elif data is not None:
            raise InvalidPayload(f"file_operation: {op} takes no 'data'")

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Enforce the policy, open the allowed root, then do the operation beneath it."""
        policy = ctx.policy
        if not policy.allow_file_operations:
            raise TaskRefused("file_operation: this node does not allow file operations")
        if not policy.allowed_paths:
            raise TaskRefused("file_operation: this node lists no allowed_paths")
        path: str = payload["path"]
        found = split_beneath(path, policy.allowed_paths)
        if found is None:
            raise TaskRefused(f"file_operation: path {path!r} is outside the node's allowed paths")
        root, parts = found
        root_fd = os.open(os.path.realpath(root), os.O_RDONLY | DIRECTORY | CLOEXEC)  # the owner's link
        try:
            return _dispatch(_Target(root_fd, parts, path), payload)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EXDEV):
                raise _refused(path, exc) from None
            raise
        finally:
            os.close(root_fd)


def _dispatch(t: _Target, payload: dict[str, Any]) -> dict[str, Any]:
    op: str = payload["op"]
    if op == "read":
        return _read(t)
    if op == "write":
        return _write(t, payload["data"].encode())
    if op == "append":
        return _append(t, payload["data"].encode())
    if op == "list":
        return _list(t)
    if op == "stat":
        return _stat(t)
    if op == "delete":
        return _delete(t)
    return _mkdir(t)


handler = FileOperationHandler()
