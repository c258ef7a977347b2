"""The `file_operation` task: read, write, list or change files inside the node's allowed paths.

It is off unless the node's owner sets `allow_file_operations`, and even then it works only inside
`allowed_paths` (none listed means nowhere). Every path must be absolute and is resolved with
`os.path.realpath` before the check, so `..` and symbolic links cannot reach outside an allowed tree; files
are then opened with `O_NOFOLLOW` where the platform has it, so a link planted after the check is not
followed either. Writes go to a temporary file that is renamed into place, so readers never see half a
file. Reads and listings are bounded so that one task cannot ship a disk image through the broker.
"""

from __future__ import annotations

import os
import stat
import tempfile
from typing import Any

from swarm import __version__
from swarm.errors import InvalidPayload, TaskRefused
from swarm.plugins.pathpolicy import require_inside
from swarm.taskapi import TaskContext

__all__ = ["MAX_ENTRIES", "MAX_READ", "MAX_WRITE", "OPS", "FileOperationHandler", "handler"]

OPS = frozenset({"read", "write", "append", "list", "stat", "delete", "mkdir"})
MAX_READ = 1024 * 1024
MAX_WRITE = 16 * 1024 * 1024
MAX_ENTRIES = 10_000
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "link" if stat.S_ISLNK(mode) else "other"


def _read(path: str) -> dict[str, Any]:
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(MAX_READ + 1)
    text = data[:MAX_READ].decode("utf-8", errors="replace")
    return {"path": path, "data": text, "size": size, "truncated": len(data) > MAX_READ}


def _write(path: str, data: bytes) -> dict[str, Any]:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)  # keep an existing file's permissions
    except FileNotFoundError:
        mode = 0o644  # mkstemp's 0o600 would hide the file from the owner's other programs
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".swarm-write-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return {"path": path, "written": len(data)}


def _append(path: str, data: bytes) -> dict[str, Any]:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o644)
    with os.fdopen(fd, "ab") as f:
        f.write(data)
    return {"path": path, "written": len(data)}


def _list(path: str) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    truncated = False
    with os.scandir(path) as it:
        for entry in it:
            if len(entries) >= MAX_ENTRIES:
                truncated = True
                break
            st = entry.stat(follow_symlinks=False)
            entries.append({"name": entry.name, "type": _kind(st.st_mode), "size": st.st_size})
    entries.sort(key=lambda e: e["name"])
    return {"path": path, "entries": entries, "truncated": truncated}


def _stat(path: str) -> dict[str, Any]:
    st = os.stat(path)
    return {"path": path, "type": _kind(st.st_mode), "size": st.st_size, "mtime": st.st_mtime,
            "mode": stat.S_IMODE(st.st_mode)}  # fmt: skip


def _delete(path: str, roots: tuple[str, ...]) -> dict[str, Any]:
    if any(os.path.realpath(root) == path for root in roots):
        raise TaskRefused(f"file_operation: refusing to delete the allowed root {path!r}")
    if os.path.isdir(path):
        os.rmdir(path)  # only empty directories: no recursive deletes from a remote request
    else:
        os.unlink(path)
    return {"path": path, "deleted": True}


def _mkdir(path: str) -> dict[str, Any]:
    os.makedirs(path, exist_ok=True)
    return {"path": path, "created": True}


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
        """Enforce the policy, resolve the path inside an allowed root, then do the operation."""
        policy = ctx.policy
        if not policy.allow_file_operations:
            raise TaskRefused("file_operation: this node does not allow file operations")
        if not policy.allowed_paths:
            raise TaskRefused("file_operation: this node lists no allowed_paths")
        op: str = payload["op"]
        path = require_inside(payload["path"], policy.allowed_paths, "file_operation: path")
        if op == "read":
            return _read(path)
        if op == "write":
            return _write(path, payload["data"].encode())
        if op == "append":
            return _append(path, payload["data"].encode())
        if op == "list":
            return _list(path)
        if op == "stat":
            return _stat(path)
        if op == "delete":
            return _delete(path, policy.allowed_paths)
        return _mkdir(path)


handler = FileOperationHandler()
