"""Which event loop the `swarm` command runs: uvloop where it is installed, asyncio's own otherwise.

uvloop is a dependency on Linux and macOS (it has no Windows build; Termux builds it from source, and a
node without it runs on the default loop unchanged). `SWARM_LOOP=asyncio` selects the default loop
anyway, to measure the difference (`bench/tasks.py` runs both).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LOOP_ENV", "loop_name", "run"]

LOOP_ENV = "SWARM_LOOP"
_T = TypeVar("_T")


def loop_name() -> str:
    """The loop `run` will use: "uvloop" or "asyncio"."""
    if os.environ.get(LOOP_ENV, "").lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run `main` to its end on the chosen loop (see the module docstring)."""
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
