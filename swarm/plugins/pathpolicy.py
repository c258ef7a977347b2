"""Where `command` and `file_operation` tasks may touch the file system.

The node owner lists directories in `TaskPolicy.allowed_paths`. A path is inside one of them only after
both are resolved with `os.path.realpath`, so neither `..` segments nor symbolic links can lead out of an
allowed tree: the check is made on where the path really points, not on how it is spelled.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from swarm.errors import TaskRefused

__all__ = ["is_inside", "require_inside"]


def is_inside(real_path: str, roots: Iterable[str]) -> bool:
    """Whether an already resolved path equals or lies below one of `roots` (resolved here)."""
    for root in roots:
        real_root = os.path.realpath(root)
        try:
            if os.path.commonpath([real_path, real_root]) == real_root:
                return True
        except ValueError:  # different drives on Windows, or relative vs absolute
            continue
    return False


def require_inside(path: str, roots: Iterable[str], what: str) -> str:
    """Resolve `path` and return it, or raise `TaskRefused` if it is outside every allowed root."""
    real = os.path.realpath(path)
    if not is_inside(real, roots):
        raise TaskRefused(f"{what} {path!r} (resolved to {real!r}) is outside the node's allowed paths")
    return real
