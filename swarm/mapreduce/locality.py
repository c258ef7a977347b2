"""Tasks on the submitter's own machine read their split and write their output file directly.

A map task normally fetches its split from the submitter's data server, and a reduce task uploads
`mr-out-<r>` to it. When the task runs on the submitter's machine, both are loopback HTTP transfers of
bytes that sit in the same page cache: two copies through the kernel, and CPU time of the submitter,
which serves and receives every other task's bytes too (receiving a sort's 1 GB of output cost it
about 5 CPU-seconds). Like Hadoop's short-circuit local reads, such a task uses the file system
instead, but only when

1. the path lies inside a directory the node's owner opened to tasks (`[tasks] allowed_paths`, checked
   as for `command` and `file_operation` tasks), so a job cannot make a node read or write what its
   owner did not open;
2. this machine's id (`/etc/machine-id`) is the one the submitter recorded; and
3. the file (or the output directory) is still the one the submitter planned: same device and inode,
   and for an input the same size and modification time.

Anything else (another machine, no machine id, a changed file, a payload of the wrong shape, a write
that cannot be opened) falls back to the data server, so the worst case is the ordinary path. An
output is written as the data server stores an upload: a temporary file beside it, fsynced, renamed
into place (`AtomicFile`).

A reducer also reads the map outputs its own node holds from its data directory rather than from its
own data server (`read_own_run`): no permission is involved there beyond what the data server would
check (the run must lie in its own job's directory, `mr/<job id>/`, whose token the reducer holds), and
the checksum is verified alike.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any

from swarm.checksum import checksum_bytes
from swarm.durable import AtomicFile
from swarm.plugins.pathpolicy import is_inside
from swarm.runtime.httpwire import is_name
from swarm.runtime.jobaccess import JOBS_DIR

__all__ = ["file_identity", "machine_id", "open_local_output", "read_local", "read_own_run"]

_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def machine_id() -> str | None:
    """This machine's stable id, or None where the system keeps none (then nothing is done locally)."""
    for name in _MACHINE_ID_FILES:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return None


def file_identity(path: Path) -> dict[str, Any] | None:
    """What a task on this machine checks before using `path` (a file or a directory) itself; None
    without a machine id."""
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


def _usable_path(identity: Any, allowed_paths: tuple[str, ...]) -> str | None:
    """The identity's path if this node may use it here, else None (KeyError/TypeError on a bad shape)."""
    path = identity["path"]
    if not allowed_paths or not isinstance(path, str) or identity["machine"] != machine_id():
        return None
    return path if is_inside(os.path.realpath(path), allowed_paths) else None


def read_local(identity: Any, start: int, end: int, allowed_paths: tuple[str, ...]) -> memoryview | None:
    """Bytes [start, end) of the file `identity` names if this node may and can read that very file
    here, else None (the caller fetches the split instead).

    The bytes are a read-only view of the file mapped into memory, not a copy: reading a 64 MB split
    into a buffer of its own cost a map 35 ms, beside 0.8 s of counting its words, and fresh memory of
    the split's size (which a sort's maps, whose output is views of their input, then kept). The mapping
    lives as long as the view (or an array made from it). A file truncated while it is mapped kills
    the task's process with SIGBUS: the attempt fails like a crashed one, and its retry, seeing another
    size, fetches the split from the submitter."""
    try:
        path = _usable_path(identity, allowed_paths)
        if path is None:
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
            if start == end:
                return memoryview(b"")
            # Only the split is mapped (from the page boundary below it): a large input on a 32-bit
            # device would not fit its address space whole.
            offset = start - start % mmap.ALLOCATIONGRANULARITY
            mapped = mmap.mmap(f.fileno(), end - offset, access=mmap.ACCESS_READ, offset=offset)
    except (KeyError, TypeError, OSError, ValueError):
        return None
    return memoryview(mapped)[start - offset :]


def open_local_output(target: Any, allowed_paths: tuple[str, ...]) -> AtomicFile | None:
    """An `AtomicFile` for `target["name"]` in the directory `target` identifies (`file_identity` of
    it), if this node may and can write there; else None (the caller uploads the output instead)."""
    try:
        directory, name = _usable_path(target, allowed_paths), target["name"]
        if directory is None or not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
            return None
        info = os.stat(directory)
        if (info.st_dev, info.st_ino) != (target["dev"], target["ino"]):
            return None
        # No checksum: nothing is transferred that could damage the bytes, and hashing a sort reducer's
        # output cost it 0.2 s of CPU per 512 MB.
        return AtomicFile(os.path.join(directory, name), checksummed=False)
    except (KeyError, TypeError, OSError):
        return None


def read_own_run(directory: str, relpath: Any, checksum: Any, *, job: str) -> memoryview | None:
    """A map output of `job` this node holds (`relpath` under its data `directory`, inside
    `mr/<job>/`), if it is there and matches `checksum`; else None (the caller fetches it, and
    recomputes it if that fails too). A path into another job's directory is never read: a map
    result naming one gets nothing here that its data server would refuse.

    The file is mapped, not read: its pages are in the page cache already (the map wrote them), and a
    copy of them would cost fresh memory of the run's size. Runs are replaced by rename and removed by
    unlink, never rewritten in place, so the mapping cannot shrink under the reader."""
    if not directory or not isinstance(relpath, str) or not isinstance(checksum, str):
        return None
    parts = relpath.split("/")
    if len(parts) < 3 or parts[:2] != [JOBS_DIR, job] or not all(is_name(part) for part in parts):
        return None
    try:
        with open(Path(directory, *parts), "rb") as f:
            data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    except (OSError, ValueError):  # ValueError: an empty file, which is no run
        return None
    return data if checksum_bytes(data) == checksum.strip().lower() else None
