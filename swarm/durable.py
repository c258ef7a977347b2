"""Making a rename durable: the one place swarm fsyncs a directory."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["fsync_directory"]


def fsync_directory(directory: Path) -> None:
    """fsync `directory` so a rename into it survives a power cut; platforms that cannot open a
    directory for this (Windows) skip it."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
