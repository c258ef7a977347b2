"""Reading a split straight from its file when the map runs on the submitter's own machine.

A map task normally fetches its split from the submitter's data server. When the task runs on the
submitter's machine, that is a loopback HTTP transfer of bytes already in the same page cache: two
copies through the kernel and CPU time of the submitter, which also serves every other split. Like
Hadoop's short-circuit local reads, the map then reads the file itself, but only when

1. the file's real path lies inside a directory the node's owner opened to tasks (`[tasks]
   allowed_paths`, checked as for `command` and `file_operation` tasks), so a job cannot make a node
   read what its owner did not open;
2. this machine's id (`/etc/machine-id`) is the one the submitter recorded; and
3. the file there is still the one the submitter planned: same device, inode, size and modification
   time.

Anything else (another machine, no machine id, a changed file, a payload of the wrong shape) falls back
to the fetch, so the worst case is the ordinary path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from swarm.plugins.pathpolicy import is_inside

__all__ = ["file_identity", "machine_id", "read_local"]

_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def machine_id() -> str | None:
    """This machine's stable id, or None where the system keeps none (then nothing is read locally)."""
    for name in _MACHINE_ID_FILES:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return None


def file_identity(path: Path) -> dict[str, Any] | None:
    """What a map on this machine checks before reading `path` itself; None without a machine id."""
    machine = machine_id()
    if machine is None:
        return None
    real = os.path.realpath(path)
    info = os.stat(real)
    return {
        "machine": machine,
        "path": real,
        "dev": info.st_dev,
        "ino": info.st_ino,
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
    }


def read_local(identity: Any, start: int, end: int, allowed_paths: tuple[str, ...]) -> bytes | None:
    """Bytes [start, end) of the file `identity` names if this node may and can read that very file
    here, else None (the caller fetches the split instead)."""
    try:
        path = identity["path"]
        if (
            not allowed_paths
            or not isinstance(path, str)
            or identity["machine"] != machine_id()
            or not is_inside(os.path.realpath(path), allowed_paths)
        ):
            return None
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            same = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns) == (
                identity["dev"],
                identity["ino"],
                identity["size"],
                identity["mtime_ns"],
            )
            if not same or not 0 <= start <= end <= info.st_size:
                return None
            f.seek(start)
            data = f.read(end - start)
    except (KeyError, TypeError, OSError):
        return None
    return data if len(data) == end - start else None
